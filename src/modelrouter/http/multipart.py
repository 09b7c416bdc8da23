"""Multipart uploads (audio transcription/translation, image edits): parsed as they arrive, files spooled to disk
past a memory threshold, and re-encoded for the upstream on demand - as often as needed, so a request can be
replayed on another instance without holding the whole file in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType

__all__ = ["ClientGone", "Form", "Part", "read_multipart"]

_READ_CHUNK = 64 * 1024


class ClientGone(Exception):
    """The client disconnected; there is nobody to answer (the front door records a 499)."""


class Part:
    __slots__ = ("content_type", "data", "file", "filename", "name", "size")

    def __init__(self, name: str, filename: str | None, content_type: str | None) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.data = bytearray()  # plain fields
        self.file: IO[bytes] | None = None  # file fields
        self.size = 0

    def __repr__(self) -> str:
        kind = f"file {self.filename!r}" if self.filename is not None else "field"
        return f"<Part {self.name!r} {kind} {self.size} bytes>"


def _quote(value: str) -> str:
    # As browsers do: percent-escape what would break the quoted header parameter.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Form:
    def __init__(self, parts: list[Part]) -> None:
        self.parts = parts

    def text(self, name: str) -> str | None:
        for part in self.parts:
            if part.name == name and part.filename is None:
                return part.data.decode("utf-8", "replace")
        return None

    def get(self, name: str) -> str | None:
        """A text field, so that code reading ``model`` or ``user`` treats a form like a JSON body."""
        return self.text(name)

    def has_file(self, name: str) -> bool:
        return any(p.name in (name, f"{name}[]") and p.filename is not None for p in self.parts)

    def encode(self, replace: dict[str, str]) -> tuple[str, int, Callable[[], AsyncIterator[bytes]]]:
        """(content type, exact length, body factory) for the upstream, with text fields in ``replace`` set.
        The exact length lets us send Content-Length: several speech servers do not accept chunked uploads."""
        boundary = "modelrouter" + _random_token()
        segments: list[bytes | Part] = []
        for part in self.parts:
            disposition = f'form-data; name="{_quote(part.name)}"'
            if part.filename is not None:
                disposition += f'; filename="{_quote(part.filename)}"'
            head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            if part.content_type:
                head += f"Content-Type: {part.content_type}\r\n"
            segments.append((head + "\r\n").encode())
            if part.filename is None and part.name in replace:
                segments.append(replace[part.name].encode())
            elif part.file is not None:
                segments.append(part)
            else:
                segments.append(bytes(part.data))
            segments.append(b"\r\n")
        for name, value in replace.items():
            # A field the client left out (e.g. `model`, optional for image edits) is added.
            if self.text(name) is None:
                head = f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
                segments += [head.encode(), value.encode(), b"\r\n"]
        segments.append(f"--{boundary}--\r\n".encode())
        length = sum(s.size if isinstance(s, Part) else len(s) for s in segments)

        async def body() -> AsyncIterator[bytes]:
            for segment in segments:
                if isinstance(segment, Part):
                    assert segment.file is not None
                    segment.file.seek(0)
                    while chunk := segment.file.read(_READ_CHUNK):
                        yield chunk
                else:
                    yield segment

        return f"multipart/form-data; boundary={boundary}", length, body

    def close(self) -> None:
        for part in self.parts:
            if part.file is not None:
                part.file.close()

    def __repr__(self) -> str:
        return f"<Form {self.parts}>"


def _random_token() -> str:
    import secrets

    return secrets.token_hex(12)


async def read_multipart(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    content_type: str | None,
    *,
    max_bytes: int,
    spool_bytes: int,
    already: bytes = b"",
) -> Form:
    """Read a multipart/form-data body from ASGI ``receive``. Raises 415 for another content type, 400 for a
    malformed body, 413 past ``max_bytes``."""
    if not content_type:
        raise UnsupportedMediaType("Content-Type must be multipart/form-data")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data, not {ctype.decode('latin-1')}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data body has no boundary")

    parts: list[Part] = []
    current: list[Part] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}

    def on_part_begin() -> None:
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disp, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disp != b"form-data" or name is None:
            raise InvalidRequest("multipart part without a form-data name")
        filename = options.get(b"filename")
        part = Part(
            name.decode("utf-8", "replace"),
            None if filename is None else filename.decode("utf-8", "replace"),
            headers[b"content-type"].decode("latin-1") if b"content-type" in headers else None,
        )
        if part.filename is not None:
            # Closed by Form.close() when the request ends.
            part.file = tempfile.SpooledTemporaryFile(max_size=spool_bytes, prefix="modelrouter-upload-")  # noqa: SIM115
        parts.append(part)
        current[:] = [part]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        chunk = data[start:end]
        part.size += len(chunk)
        if part.file is not None:
            part.file.write(chunk)
        else:
            if part.size > 1024 * 1024:
                raise InvalidRequest(f"multipart field '{part.name}' is too long for a text field")
            part.data.extend(chunk)

    ended: list[bool] = []

    def on_end() -> None:
        ended.append(True)

    parser = MultipartParser(
        boundary,
        {
            "on_end": on_end,
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
        max_header_count=16,
    )
    form = Form(parts)
    total = 0
    try:
        chunk = already
        more = True
        while True:
            if chunk:
                total += len(chunk)
                if total > max_bytes:
                    raise BodyTooLarge(f"upload larger than the {max_bytes} byte limit")
                parser.write(chunk)
            if not more:
                break
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
        parser.finalize()
        # The parser takes a body that just stops as complete: its last part would then be forwarded as a whole
        # file or field, though the client (or a proxy) broke off. Only the closing boundary says it is all there.
        if not ended:
            raise InvalidRequest(
                "multipart/form-data body ends without its closing boundary", code="incomplete_multipart"
            )
    except MultipartParseError as exc:
        form.close()
        raise InvalidRequest(f"malformed multipart/form-data body: {exc}") from None
    except BaseException:
        form.close()
        raise
    return form
