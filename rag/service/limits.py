"""What the API refuses, and when: from the headers, before the body is read (RequestGuard),
then a text or an upload past its limit before it costs any work.

FastAPI parses a form (and spools uploads to /tmp) before any dependency runs, so an API-key
dependency or a size check in the route comes after a client has sent, and the server has
stored, everything it wanted to send. This middleware decides from the headers alone: the
API key of /v1 calls, a declared Content-Length over the limit, a full work queue. For a body
without Content-Length (chunked), it counts the bytes as they arrive and stops the request
at the limit. Every refusal here closes the connection, so an unread body is not drained.
It also writes the one log line per request: method, route, status and time, never values.
"""
from __future__ import annotations

import hmac
import logging
import time

from fastapi import UploadFile
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.service.runner import ApiError, Settings, Worker
from rag.text.words import count_words

log = logging.getLogger("caselens.api")
FORM_OVERHEAD = 64 * 1024  # a form's fields around an upload; all that a body without one may hold


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit: FastAPI lets an
    HTTPException out of its body parsing unchanged, so the app's handler answers 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request is larger than {limit:,} bytes",
                         {"Connection": "close"})


class RequestGuard:
    def __init__(self, app: ASGIApp, api_key: str | None, max_upload_bytes: int, worker: Worker):
        self.app = app
        self.api_key = api_key
        self.max_upload_bytes = max_upload_bytes
        self.worker = worker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            headers = Headers(scope=scope)
            limit = self.body_limit(headers)
            refusal = self.refusal(scope, headers, limit)
            if refusal is not None:
                await refusal(scope, receive, send_logged)
            else:
                await self.app(scope, self.counted(receive, limit), send_logged)
        finally:
            # method, route and status only: never form values, uploads, record ids or texts
            path = scope["path"]
            route = "/v1/records/{id}" if path.startswith("/v1/records/") else path
            log.info("%s %s -> %d in %.0f ms", scope["method"], route, status,
                     (time.perf_counter() - started) * 1000)

    def body_limit(self, headers: Headers) -> int:
        """An upload's form may carry max_upload_bytes; any other body only form fields."""
        if headers.get("content-type", "").startswith("multipart/form-data"):
            return self.max_upload_bytes + FORM_OVERHEAD
        return FORM_OVERHEAD

    def refusal(self, scope: Scope, headers: Headers, limit: int) -> JSONResponse | None:
        """The answer to a request that must not get further, decided from its headers
        (`limit`: body_limit's)."""
        if scope["path"].startswith("/v1/"):
            if self.api_key is not None and not hmac.compare_digest(
                    headers.get("x-api-key", "").encode(), self.api_key.encode()):
                return _refuse(401, "missing or wrong API key: send it in the X-API-Key header")
            if self.worker.full():
                busy = self.worker.busy_error()
                return _refuse(503, busy.message, busy.headers)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return _refuse(413, f"the request is larger than {limit:,} bytes")
        return None

    @staticmethod
    def counted(receive: Receive, limit: int) -> Receive:
        """`receive` that raises BodyTooLarge once more than `limit` body bytes came in."""
        seen = 0

        async def receive_counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return receive_counted


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status,
                        {**(headers or {}), "Connection": "close"})


def check_text(settings: Settings, name: str, value: str | None) -> None:
    """Refuse texts past what the encoder reads, before they cost any work."""
    if value is None:
        return
    if len(value) > settings.max_text_chars:
        raise ApiError(413, f"the {name} has {len(value):,} characters; at most "
                            f"{settings.max_text_chars:,} are accepted: shorten it")
    words = count_words(value)
    if words > settings.max_text_words:
        raise ApiError(413, f"the {name} has {words:,} words; at most "
                            f"{settings.max_text_words:,} are accepted: shorten it")


async def read_upload(settings: Settings, file: UploadFile | None) -> bytes | None:
    """The uploaded file's bytes, refused past max_upload_bytes (the guard only bounds the
    whole body, form fields included)."""
    if file is None:
        return None
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, f"the upload is larger than {settings.max_upload_bytes:,} bytes")
    return data
