"""The HTTP API: cross-modal search, cited reports, records and thumbnails over one index.

`create_app(settings)` builds a FastAPI app; the index, encoder and generator are loaded once
in the lifespan and shared by every request. Only `rag.pipeline` is called. Requests are
served one at a time against the shared models (the encoder, SQLite and the embedded Qdrant
store are not made for concurrent use); up to `max_waiting` more wait their turn, beyond that
the answer is 503 with Retry-After. No request field is ever used as a file-system path.
"""
from __future__ import annotations

import hmac
import io
import logging
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag import pipeline
from rag.images import ImageError, load_image, load_image_bytes

log = logging.getLogger("caselens.api")
WEB = Path(__file__).parent / "web"
FORM_OVERHEAD = 64 * 1024  # room for the form's other fields around an upload
KINDS_HELP = "reports, images, guidelines or qa (several: repeat the field)"


@dataclass
class Settings:
    index: Path = pipeline.DEFAULT_INDEX
    backend: str | None = None  # default: the index's first backend
    api_key: str | None = None  # when set, /v1 requires the X-API-Key header
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_waiting: int = 16  # requests queued behind the one being served
    thumbnail_px: int = 256
    generator: str = "auto"  # who writes /v1/ask's reports (loaded once at start)
    generator_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"model_path": ...}


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# --- response models (the OpenAPI schema) -------------------------------------------------

class Linked(BaseModel):
    id: str
    kind: str
    lang: str
    text: str


class HitOut(BaseModel):
    id: str = Field(examples=["cov-ctr:a%0.png/en"])
    score: float = Field(examples=[0.61])
    rank: int = Field(examples=[1])
    kind: str = Field(examples=["report"])
    domain: str = Field(examples=["chest-ct"])
    modality: str = Field(examples=["ct"])
    lang: str = Field(examples=["en"])
    source: str = Field(examples=["cov-ctr"])
    study: str
    image: str | None = None
    text: str = Field(examples=["Ground glass opacity in the right upper lobe."])
    license: str
    backend: str = Field(examples=["faiss"])
    route: str = Field(examples=["image->report"])
    cosine: float | None = None
    linked: list[Linked] = []
    thumbnail: str | None = Field(None, examples=["/v1/records/cov-ctr:images%2Fa.png/thumbnail"])


class SearchOut(BaseModel):
    hits: list[HitOut]
    retrieval: dict[str, Any] = Field(
        default_factory=dict, description="the domain route and, per kind, the k rule and cut",
        examples=[{"route": {"domains": ["chest-xray"], "confidence": 0.93},
                   "cuts": {"report": {"candidates": 20, "kept": 4}}}])
    seconds: float


class SentenceOut(BaseModel):
    text: str = Field(examples=["Ground glass opacity in the right upper lobe."])
    cites: list[str] = Field(examples=[["cov-ctr:a%0.png/en"]])
    supported: bool | None = Field(None, description="the support check's verdict, when run")
    support: float | None = Field(None, description="similarity to the closest cited evidence")
    issues: list[str] = []


class ReportOut(BaseModel):
    lang: str = Field(examples=["zh"])
    model: str = Field(examples=["grounded-composer"])
    warnings: list[str]
    errors: list[str] = Field([], description="e.g. a citation of no retrieved case")
    unsupported: int = Field(0, description="sentences the support check could not back")
    seconds: float | None = None
    sections: dict[str, list[SentenceOut]]


class AskOut(BaseModel):
    report: ReportOut
    hits: list[HitOut]
    retrieval: dict[str, Any] = {}
    seconds: float


class RecordOut(BaseModel):
    id: str
    kind: str
    modality: str
    body_part: str
    domain: str
    lang: str
    text: str
    image: str | None
    study: str
    source: str
    license: str
    meta: dict[str, Any]
    thumbnail: str | None = None


class ErrorOut(BaseModel):
    error: str = Field(examples=["cannot read the uploaded image: not an image format it knows"])
    status: int = Field(examples=[400])


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422, 503)}


# --- the app --------------------------------------------------------------------------------

class _Gate:
    """One request at a time on the shared session, at most `waiting` more queued."""

    def __init__(self, waiting: int):
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(waiting + 1)

    @contextmanager
    def turn(self):
        if not self.slots.acquire(blocking=False):
            raise ApiError(503, "the server is busy: retry in a few seconds",
                           {"Retry-After": "2"})
        try:
            with self.lock:
                yield
        finally:
            self.slots.release()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state: dict[str, Any] = {"session": None, "error": "the index is still loading"}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        try:
            state["session"] = pipeline.open_session(
                settings.index, backend=settings.backend, generator=settings.generator,
                generator_options=settings.generator_options)
            state["error"] = None
            log.info("serving index %s", settings.index)
        except pipeline.USER_ERRORS as err:  # stay up: /readyz says what is wrong
            state["error"] = str(err)
            log.error("index not loaded: %s", err)
        yield
        if state["session"] is not None:
            state["session"].close()

    app = FastAPI(title="caselens", version="0.1.0", lifespan=lifespan,
                  description="Cross-modal retrieval over medical images, reports and guidelines, "
                              "and grounded reports in English or Chinese that cite the cases.")
    gate = _Gate(settings.max_waiting)

    def session() -> pipeline.Session:
        if state["session"] is None:
            raise ApiError(503, f"index not ready: {state['error']}")
        return state["session"]

    def authorised(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header")

    v1 = [Depends(authorised)]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, err: ApiError):
        return JSONResponse({"error": err.message, "status": err.status}, err.status, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_field(_: Request, err: RequestValidationError):
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}"
                           for e in err.errors())
        return JSONResponse({"error": f"bad request field(s): {fields}", "status": 422}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail), "status": err.status_code},
                            err.status_code, getattr(err, "headers", None))

    @app.middleware("http")
    async def _log_requests(request: Request, call_next):
        started = time.perf_counter()
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_upload_bytes + FORM_OVERHEAD:
            # refused before the body is read or parsed
            response = JSONResponse({"error": f"the request is larger than "
                                              f"{settings.max_upload_bytes:,} bytes", "status": 413},
                                    413)
        else:
            response = await call_next(request)
        # method, route and status only: never form values, uploads, record ids or texts
        path = request.url.path
        route = "/v1/records/{id}" if path.startswith("/v1/records/") else path
        log.info("%s %s -> %d in %.0f ms", request.method, route, response.status_code,
                 (time.perf_counter() - started) * 1000)
        return response

    async def read_upload(file: UploadFile | None) -> Image.Image | None:
        if file is None:
            return None
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"the upload is larger than {settings.max_upload_bytes:,} bytes")
        try:
            return load_image_bytes(data, settings.max_pixels)
        except ImageError as err:
            raise ApiError(400, str(err)) from err

    def run(call):
        with gate.turn():
            try:
                return call()
            except ImageError as err:
                raise ApiError(400, str(err)) from err
            except ValueError as err:  # a Query that makes no sense: no image or text, bad k
                raise ApiError(422, str(err)) from err

    def hit_out(hit) -> dict:
        out = hit.to_dict()
        out["thumbnail"] = _thumbnail_url(hit.record.id) if hit.record.kind == "image" else None
        return out

    @app.get("/healthz", tags=["service"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="The index is loaded and can answer",
             responses={503: {"model": ErrorOut}})
    def readyz() -> dict[str, Any]:
        current = session()
        return {"status": "ready", "index": current.index_dir.name,
                "counts": current.manifest.get("counts", {}),
                "encoder": current.manifest["encoder"]["name"]}

    @app.post("/v1/search", tags=["retrieval"], response_model=SearchOut, responses=ERRORS,
              dependencies=v1, summary="Find reports, images, guidelines or QA pairs for an "
                                       "uploaded image (PNG, JPEG, DICOM) or a text")
    async def search(
        file: Annotated[UploadFile | None, File(description="image: PNG, JPEG or DICOM")] = None,
        text: Annotated[str | None, Form(examples=["left pleural effusion"])] = None,
        to: Annotated[list[str], Form(description=KINDS_HELP)] = ["reports"],  # noqa: B006
        k: Annotated[str, Form(description="a number, or auto", examples=["5"])] = "5",
        domain: Annotated[str | None, Form(examples=["chest-ct"])] = None,
        modality: Annotated[str | None, Form(examples=["ct"])] = None,
        lang: Annotated[str | None, Form(examples=["zh"])] = None,
        body_part: Annotated[str | None, Form()] = None,
        diversity: Annotated[float, Form(ge=0.0, lt=1.0, description="MMR re-ranking: 0 by "
                                         "score alone, 0.3 favours hits that differ")] = 0.0,
    ) -> dict:
        image = await read_upload(file)
        started = time.perf_counter()
        filters = {"domain": domain, "modality": modality, "lang": lang, "body_part": body_part}
        hits, explain = run(lambda: (session().search(image, text, _kinds(to), k, diversity,
                                                      **filters),
                                     session().explain))
        return {"hits": [hit_out(h) for h in hits], "retrieval": explain,
                "seconds": round(time.perf_counter() - started, 4)}

    @app.post("/v1/ask", tags=["reports"], response_model=AskOut, responses=ERRORS,
              dependencies=v1, summary="Write a report for an image and/or question, in "
                                       "English or Chinese, every sentence citing the cases")
    async def ask(
        file: Annotated[UploadFile | None, File(description="image: PNG, JPEG or DICOM")] = None,
        question: Annotated[str | None, Form(examples=["pleural effusion?"])] = None,
        lang: Annotated[str, Form(pattern="^(en|zh)$", examples=["zh"])] = "en",
        k: Annotated[str, Form(description="a number, or auto")] = "auto",
        domain: Annotated[str | None, Form()] = None,
    ) -> dict:
        image = await read_upload(file)
        started = time.perf_counter()
        answer = run(lambda: session().ask(image, question, lang, k, domain=domain))
        return {"report": answer.report.to_dict(), "hits": [hit_out(h) for h in answer.hits],
                "retrieval": answer.retrieval, "seconds": round(time.perf_counter() - started, 4)}

    @app.get("/v1/records/{record_id:path}/thumbnail", tags=["records"], dependencies=v1,
             responses={**ERRORS, 200: {"content": {"image/png": {}}}},
             summary="A PNG thumbnail of an image record")
    def thumbnail(record_id: str) -> Response:
        record = _record(session(), record_id)
        if record.kind != "image":
            raise ApiError(404, f"record {record_id} is a {record.kind}, not an image")
        # the path comes from the index's own record, never from the request
        with gate.turn():
            try:
                image = load_image(record.image_path(), frame=record.meta.get("frame"))
            except ImageError as err:
                raise ApiError(404, f"the image of record {record_id} is no longer readable: "
                               f"{err}") from err
        image.thumbnail((settings.thumbnail_px, settings.thumbnail_px))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/records/{record_id:path}", tags=["records"], response_model=RecordOut,
             responses=ERRORS, dependencies=v1, summary="One record by id")
    def record(record_id: str) -> dict:
        found = _record(session(), record_id)
        out = found.to_dict()
        out.pop("root", None)  # a server path: not the client's business
        out["thumbnail"] = _thumbnail_url(found.id) if found.kind == "image" else None
        return out

    if WEB.is_dir():
        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(WEB / "index.html")

        app.mount("/web", StaticFiles(directory=WEB), name="web")
    return app


def _kinds(to: list[str]) -> tuple[str, ...]:
    kinds = []
    for value in to:
        kinds += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(kinds) or ("report",)


def _record(current: pipeline.Session, record_id: str):
    found = current.record(record_id)
    if found is None:
        raise ApiError(404, f"no record with id {record_id!r} in this index")
    return found


def _thumbnail_url(record_id: str) -> str:
    from urllib.parse import quote

    return f"/v1/records/{quote(record_id, safe='')}/thumbnail"
