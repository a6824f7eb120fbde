"""Request size limits: bodies over the limit get 413 before anything reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` (by Content-Length, and while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        seen, started, rejected = 0, False, False

        async def limited_receive():
            nonlocal seen, rejected
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Answer 413 here: the app may catch the exception below (FastAPI turns any error while
                    # reading a body into a 400), so whatever it sends afterwards is dropped.
                    if not started and not rejected:
                        rejected = True
                        await self._reject(send)
                    raise _TooLarge()
            return message

        async def guarded_send(message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started and not rejected:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"error": "PayloadTooLargeError",
                           "detail": f"request body exceeds the limit of {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass
