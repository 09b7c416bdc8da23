"""What the pipeline hands the front door: a whole answer (``Response``), or a stream (``StreamResponse``) that
finishes its upstream attempt when it is closed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from ..adapters.base import StreamTranslator
from ..errors import GatewayError, UpstreamInvalid, UpstreamInvalidResponse
from ..upstream.base import UpstreamResponse
from .attempt import Attempt

__all__ = ["Response", "StreamResponse"]


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # The backend's own answer when it spoke the front door's dialect (``body`` is then its chat translation, which
    # metering read): what the client gets.
    native: bytes | None = None


class StreamResponse:
    """A streamed answer. ``aclose`` must be called on every path (the front door does it in ``finally``): it
    closes the upstream response and finishes the attempt (instance given back, breaker verdict, span) once."""

    __slots__ = (
        "_answered",
        "_attempt",
        "_closed",
        "_first",
        "_out",
        "_resp",
        "_translator",
        "error_event",
        "headers",
        "native",
        "post",
        "sse",
        "status",
        "timed",
    )

    def __init__(
        self,
        resp: UpstreamResponse,
        attempt: Attempt,
        translator: StreamTranslator | None,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self._resp = resp
        self._attempt = attempt
        self._translator = translator
        self._closed = False
        # The backend answered: its first output came (or its stream ended without any). Unless it then breaks
        # the stream off (a failure), the attempt is a success when the stream is closed, the client gone or not.
        self._answered = False
        self._first = b""
        self._out = self._produce()
        self.status = resp.status
        self.headers = headers
        # SSE streams end with an error event when the upstream fails; binary streams just break off.
        self.sse = translator is not None
        # Metrics on: the stream's whole upstream duration goes into the meter (answer_s) when it ends.
        self.timed = False
        # A front door of another dialect (dialects/): what its client gets, made of the gateway's chunks, and how
        # a stream that breaks off tells it so.
        self.post: StreamTranslator | None = None
        self.error_event: Callable[[GatewayError], bytes] = _error_event
        self.native = False  # the client gets the backend's own events (its dialect is the front door's)

    async def prime(self) -> None:
        """Read until the first bytes for the client exist (or the body ended). Until then nothing has reached
        the client, so a backend that stalls or breaks before its first token can still be failed over."""
        async for out in self._out:
            self._first = out
            # From the first event on, only the idle timeout bounds each wait (first_byte covered this one).
            self._resp.first_event()
            break
        self._answered = True

    async def chunks(self) -> AsyncIterator[bytes]:
        post = self.post
        if post is None:
            if self._first:
                yield self._first
                self._first = b""
            async for out in self._out:
                yield out
            return
        try:
            if self._first:
                first, self._first = self._first, b""
                if out := post.feed(first):
                    yield out
            async for chunk in self._out:
                if out := post.feed(chunk):
                    yield out
            if out := post.end():
                yield out
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamInvalid(f"the backend sent an invalid stream: {exc}") from None

    async def _produce(self) -> AsyncIterator[bytes]:
        translator = self._translator
        try:
            if translator is None:
                async for chunk in self._resp.iter_chunks():
                    yield chunk
            else:
                try:
                    async for chunk in self._resp.iter_chunks():
                        out = translator.feed(chunk)
                        if out:
                            yield out
                    out = translator.end()
                except (ValueError, KeyError, TypeError) as exc:
                    # The upstream sent something its dialect does not allow (bad JSON line, early end).
                    if isinstance(exc, orjson.JSONDecodeError):
                        raise UpstreamInvalidResponse(f"the backend sent a stream that is not JSON: {exc}") from None
                    raise UpstreamInvalid(f"the backend sent an invalid stream: {exc}") from None
                if out:
                    yield out
        except GatewayError as exc:
            self._attempt.judge(False, exc)
            self.close(exc)
            raise

    def close(self, error: BaseException | None = None) -> None:
        """Close the upstream response and finish the attempt: a failure if the backend broke the stream off
        (judged where it broke), a success if it answered, else abandoned (cancelled before its first output)."""
        if self._closed:
            return
        self._closed = True
        self._resp.close()
        attempt = self._attempt
        if self._answered:
            attempt.judge(True)
        if self.timed and attempt.meter is not None:
            attempt.meter.answer_s = attempt.elapsed()
        attempt.finish(error)

    def aclose(self) -> None:
        self.close()


def _error_event(exc: GatewayError) -> bytes:
    """The SSE event that ends a stream broken off after its first byte: the error, as OpenAI clients read it."""
    return b"data: " + exc.body() + b"\n\n"
