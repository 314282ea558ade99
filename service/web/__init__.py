"""The browser page served at ``/``: plain HTML, CSS and JavaScript shipped as package data.

Nothing is built and nothing is fetched at run time (the page must work on a machine with no
network but the service's own): the files beside this module are read once, and the page's
references to them carry their content hash (``/web/app.js?v=<hash>``).  A browser may then keep
an asset for a year, since a changed file is a new URL, while the page itself is revalidated on
every load, so it never runs an old script against a new page.

The page is a client of the public API only (``/v1/ws``, ``/v1/status``, ``/v1/sweep``): it has
no endpoint of its own, so what it shows is what any client gets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

PAGE_FILE = "index.html"
# Every file the page loads, with its media type: the asset route serves these and nothing else.
ASSET_TYPES: dict[str, str] = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
ASSET_PREFIX = "/web/"

# Same origin only, no inline script or style, no framing: the page needs nothing else.
# ('self' in connect-src covers ws:// and wss:// to the same host.)
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
# the page is revalidated on every load; /  answers HTML or JSON by the Accept header
PAGE_HEADERS = {
    **_COMMON_HEADERS,
    "Cache-Control": "no-cache",
    "Vary": "Accept",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}
IMMUTABLE = "public, max-age=31536000, immutable"  # a versioned asset URL never changes content
REVALIDATE = "no-cache"  # an asset asked for without (or with an old) version


@dataclass(frozen=True)
class Asset:
    """One file the page loads: its bytes, media type and content hash (the ``v`` of its URL)."""

    body: bytes
    content_type: str
    version: str

    def headers(self, version: str | None) -> dict[str, str]:
        fresh = version == self.version
        return {**_COMMON_HEADERS, "Cache-Control": IMMUTABLE if fresh else REVALIDATE}


def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


@cache
def assets() -> dict[str, Asset]:
    return {
        name: Asset(body, media, hashlib.sha256(body).hexdigest()[:16])
        for name, media in ASSET_TYPES.items()
        for body in (_read(name),)
    }


@cache
def page() -> bytes:
    """``index.html`` with each asset reference pointing at the asset's current version."""
    html = _read(PAGE_FILE).decode()
    for name, asset in assets().items():
        plain = f'"{ASSET_PREFIX}{name}"'
        if plain not in html:
            raise RuntimeError(f"{PAGE_FILE} does not reference {ASSET_PREFIX}{name}")
        html = html.replace(plain, f'"{ASSET_PREFIX}{name}?v={asset.version}"')
    return html.encode()


def prefers_html(accept: str) -> bool:
    """True when an ``Accept`` header asks for HTML over JSON (a browser's navigation does).

    ``*/*`` alone, no header, or JSON ranked at least as high keeps the JSON index, so every
    client of the JSON index (curl, scripts, probes) gets what it always got.
    """
    html_q = json_q = 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media == "application/json":
            json_q = max(json_q, q)
    return html_q > 0 and html_q > json_q
