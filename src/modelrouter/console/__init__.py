"""The web console: static assets shipped in this package (``assets/``: HTML, CSS and plain JavaScript, no build
step, nothing from a CDN), served by the front door at ``console.path`` (``/console``). Everything it shows and
does goes through the admin API, so all of it can be scripted too. ``/`` redirects to it while it is on.

Served with a strict Content-Security-Policy: only this origin's own scripts, styles and API; no inline code, no
frames, no forms posted elsewhere.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["HEADERS", "asset"]

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
_assets: dict[str, tuple[bytes, bytes]] | None = None


def _load() -> dict[str, tuple[bytes, bytes]]:
    found: dict[str, tuple[bytes, bytes]] = {}
    for entry in resources.files(__package__).joinpath("assets").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _TYPES:
            found[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return found


def asset(rest: str) -> tuple[bytes, bytes] | None:
    """The body and content type of the console file at ``rest`` (what follows the console path), or None."""
    global _assets
    if _assets is None:
        _assets = _load()  # read once, on the first console request
    name = rest.lstrip("/") or "index.html"
    return _assets.get(name)
