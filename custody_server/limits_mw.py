"""Request size limits, as plain ASGI middleware in front of the application.

Headers are bounded by the HTTP parser (uvicorn's ``h11_max_incomplete_event_size``: a
head that arrives in pieces and grows past it is answered 400 and closed) and here, by count
and total size (431). A body larger
than ``max_body`` bytes is refused with 413: at once when ``Content-Length`` says so, else as
soon as the streamed body passes the limit; the application never sees the rest.
"""

from __future__ import annotations

import json
from typing import Any

from custody_server.tls import App, Receive, Scope, Send


class BodyTooLarge(Exception):
    """The streamed body passed the limit (the app answers 413)."""

    pass


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"errors": [message]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SizeLimits:
    """Refuse bodies over *max_body* bytes (413), and more than *max_headers* headers or
    *max_header_bytes* of them (431)."""

    def __init__(
        self, app: App, *, max_body: int, max_headers: int = 64, max_header_bytes: int = 16384
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) for k, v in headers) + len(scope.get("raw_path") or b"")
        if len(headers) > self.max_headers or size > self.max_header_bytes:
            await _refuse(send, 431, "request headers too large")
            return
        for k, v in headers:
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    await _refuse(send, 400, "bad content-length")
                    return
                if n > self.max_body:
                    await _refuse(send, 413, f"request body larger than {self.max_body} bytes")
                    return
        seen = 0
        started = False

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return msg

        async def tracking(msg: Any) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited, tracking)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"request body larger than {self.max_body} bytes")
