"""The HTTP API: cross-modal search, cited reports, records and thumbnails over one index.

`create_app(settings)` builds a FastAPI app; the index, encoder and generator are loaded once
in the lifespan and shared by every request. Requests are served one at a time, off the event
loop, by one worker thread (rag/service/runner.py: the encoder, SQLite and the embedded Qdrant
store are not made for concurrent use); up to `max_waiting` more wait their turn, beyond that
the answer is 503 with Retry-After, and /healthz answers whatever the worker is doing. What
can be refused from the headers (API key, size, a full queue) is refused before the body is
read (rag/service/limits.py). The routes are in rag/service/routes.py; every error, whoever
raises it, is answered as {"error": one sentence, "status": code}.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag import pipeline
from rag.images import ImageError
from rag.service.limits import RequestGuard
from rag.service.routes import router
from rag.service.runner import ApiError, Service, Settings
from rag.types import InputError

WEB = Path(__file__).parent / "web"

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        try:  # opened on the worker thread, the one that will use it
            await service.worker.call(service.open)
        except pipeline.USER_ERRORS:  # stay up: /readyz says what is wrong
            pass
        yield
        await service.worker.call(service.close)
        service.worker.shutdown()

    app = FastAPI(title="caselens", version="0.1.0", lifespan=lifespan,
                  description="Cross-modal retrieval over medical images, reports and guidelines, "
                              "and grounded reports in English or Chinese that cite the cases.")
    app.state.settings = settings
    app.state.service = service  # the routes' dependency; tests and benchmarks reach the worker
    app.add_middleware(RequestGuard, api_key=settings.api_key,
                       max_upload_bytes=settings.max_upload_bytes, worker=service.worker)
    _answer_errors_as_json(app, settings)
    app.include_router(router)
    if WEB.is_dir():
        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(WEB / "index.html")

        app.mount("/web", StaticFiles(directory=WEB), name="web")
    return app


def _answer_errors_as_json(app: FastAPI, settings: Settings) -> None:
    """Every error as {"error", "status"}: the statuses chosen in the service (ApiError), a
    request the user got wrong, in a dependency or on the worker (InputError: 422; an image
    that cannot be decoded, ImageError: 400), fields FastAPI refuses, and HTTP errors. Any
    other exception is a bug: 500, logged with its traceback."""
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError):
        return JSONResponse({"error": err.message, "status": err.status}, err.status, err.headers)

    @app.exception_handler(InputError)
    async def _user_error(_: Request, err: InputError):
        return JSONResponse({"error": str(err), "status": 422}, 422)

    @app.exception_handler(ImageError)
    async def _bad_image(_: Request, err: ImageError):
        return JSONResponse({"error": str(err), "status": 400}, 400)

    @app.exception_handler(RequestValidationError)
    async def _bad_field(_: Request, err: RequestValidationError):
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                           for e in err.errors())
        return JSONResponse({"error": f"bad request field(s): {fields}", "status": 422}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException):
        status, message = err.status_code, str(err.detail)
        if status == 400 and "exceeded maximum size" in message:  # the form parser's field limit
            status, message = 413, (f"a form field is too large ({message}); texts are limited "
                                    f"to {settings.max_text_chars:,} characters")
        return JSONResponse({"error": message, "status": status}, status,
                            getattr(err, "headers", None))
