"""The HTTP API: cross-modal search, cited reports, records and thumbnails over one index.

`create_app(settings)` builds a FastAPI app; the index, encoder and generator are loaded once
in the lifespan and shared by every request. Only `rag.pipeline` is called. Requests are
served one at a time, off the event loop, by one worker thread (rag/service/runner.py: the encoder,
SQLite and the embedded Qdrant store are not made for concurrent use); up to `max_waiting`
more wait their turn, beyond that the answer is 503 with Retry-After, and /healthz answers
whatever the worker is doing. What can be refused from the headers (API key, size, a full
queue) is refused before the body is read (rag/service/guard.py). No request field is ever used
as a file-system path.
"""
from __future__ import annotations

import io
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from generator.base import GeneratorCrashed
from rag import pipeline
from rag.service.guard import RequestGuard
from rag.service.runner import ApiError, Service
from rag.images import ImageError, load_image, load_image_bytes
from rag.text.words import count_words

log = logging.getLogger("caselens.api")
WEB = Path(__file__).parent / "web"
KINDS_HELP = "reports, images, guidelines or qa (several: repeat the field)"


@dataclass
class Settings:
    index: Path = pipeline.DEFAULT_INDEX
    backend: str | None = None  # default: the index's first backend
    api_key: str | None = None  # when set, /v1 requires the X-API-Key header
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_waiting: int = 16  # requests queued behind the one being served
    max_text_chars: int = 2000  # a search text or question, in characters...
    max_text_words: int = 1000  # ...and in words (a Chinese character counts as one)
    threads: int | None = None  # torch threads of the worker (None: torch's; serve uses 1)
    thumbnail_px: int = 256
    generator: str = "auto"  # who writes /v1/ask's reports (loaded once at start)
    generator_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"model_path": ...}


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
    app.state.service = service  # tests and benchmarks reach the worker through it
    app.add_middleware(RequestGuard, api_key=settings.api_key,
                       max_upload_bytes=settings.max_upload_bytes, worker=service.worker)

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
        status, message = err.status_code, str(err.detail)
        if status == 400 and "exceeded maximum size" in message:  # the form parser's field limit
            status, message = 413, (f"a form field is too large ({message}); texts are limited "
                                    f"to {settings.max_text_chars:,} characters")
        return JSONResponse({"error": message, "status": status}, status,
                            getattr(err, "headers", None))

    async def read_upload(file: UploadFile | None) -> bytes | None:
        if file is None:
            return None
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"the upload is larger than {settings.max_upload_bytes:,} bytes")
        return data

    def decode(data: bytes | None) -> Image.Image | None:
        return None if data is None else load_image_bytes(data, settings.max_pixels)

    def check_text(name: str, value: str | None) -> None:
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

    async def work(request: Request, call):
        """call(session) on the worker thread, its errors as JSON statuses; dropped unstarted
        when the client disconnects while it waits."""
        def guarded(current: pipeline.Session):
            try:
                return call(current)
            except ImageError as err:
                raise ApiError(400, str(err)) from err
            except GeneratorCrashed as err:  # only its worker process died: keep serving
                log.error("the language model crashed: %s", err.cause)
                raise ApiError(503, f"the language model crashed ({err.cause}): retry, the "
                                    "next request starts it again") from err
            except ValueError as err:  # a Query that makes no sense: no image or text, bad k
                raise ApiError(422, str(err)) from err

        return await service.run(guarded, request.receive)

    def hit_out(hit) -> dict:
        out = hit.to_dict()
        out["thumbnail"] = _thumbnail_url(hit.record.id) if hit.record.kind == "image" else None
        return out

    def ready() -> dict[str, Any]:
        current = service.session
        if current is None:
            raise ApiError(503, f"index not ready: {service.error}")
        return {"status": "ready", "index": current.index_dir.name,
                "counts": current.manifest.get("counts", {}),
                "encoder": current.manifest["encoder"]["name"], "reloads": service.reloads}

    @app.get("/healthz", tags=["service"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}  # on the event loop: never waits for the worker

    @app.get("/readyz", tags=["service"], summary="The index is loaded and can answer",
             responses={503: {"model": ErrorOut}})
    async def readyz() -> dict[str, Any]:
        if service.stale():  # a new build on disk: load it (through the queue) and report it
            try:
                await service.run(lambda _: None)
            except ApiError:
                pass  # busy or not loadable: report what is loaded
        return ready()

    @app.post("/v1/admin/reload", tags=["service"], responses=ERRORS,
              summary="Open the index again now (a changed index is also picked up by itself "
                      "before the next request)")
    async def reload(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        await service.worker.run(lambda: service.refresh(force=True), request.receive)
        return {**ready(), "seconds": round(time.perf_counter() - started, 3)}

    @app.post("/v1/search", tags=["retrieval"], response_model=SearchOut, responses=ERRORS,
              summary="Find reports, images, guidelines or QA pairs for an uploaded image "
                      "(PNG, JPEG, DICOM) or a text")
    async def search(
        request: Request,
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
        check_text("text", text)
        data = await read_upload(file)
        started = time.perf_counter()
        filters = {"domain": domain, "modality": modality, "lang": lang, "body_part": body_part}

        def job(current: pipeline.Session):
            hits = current.search(decode(data), text, _kinds(to), k, diversity, **filters)
            return [hit_out(h) for h in hits], current.explain

        hits, explain = await work(request, job)
        return {"hits": hits, "retrieval": explain,
                "seconds": round(time.perf_counter() - started, 4)}

    @app.post("/v1/ask", tags=["reports"], response_model=AskOut, responses=ERRORS,
              summary="Write a report for an image and/or question, in English or Chinese, "
                      "every sentence citing the cases")
    async def ask(
        request: Request,
        file: Annotated[UploadFile | None, File(description="image: PNG, JPEG or DICOM")] = None,
        question: Annotated[str | None, Form(examples=["pleural effusion?"])] = None,
        lang: Annotated[str, Form(pattern="^(en|zh)$", examples=["zh"])] = "en",
        k: Annotated[str, Form(description="a number, or auto")] = "auto",
        domain: Annotated[str | None, Form()] = None,
    ) -> dict:
        check_text("question", question)
        data = await read_upload(file)
        started = time.perf_counter()

        def job(current: pipeline.Session):
            answer = current.ask(decode(data), question, lang, k, domain=domain)
            return {"report": answer.report.to_dict(), "hits": [hit_out(h) for h in answer.hits],
                    "retrieval": answer.retrieval}

        out = await work(request, job)
        return {**out, "seconds": round(time.perf_counter() - started, 4)}

    @app.get("/v1/records/{record_id:path}/thumbnail", tags=["records"],
             responses={**ERRORS, 200: {"content": {"image/png": {}}}},
             summary="A PNG thumbnail of an image record")
    async def thumbnail(request: Request, record_id: str) -> Response:
        def job(current: pipeline.Session) -> bytes:
            record = _record(current, record_id)
            if record.kind != "image":
                raise ApiError(404, f"record {record_id} is a {record.kind}, not an image")
            # the path comes from the index's own record, never from the request
            try:
                image = load_image(record.image_path(), frame=record.meta.get("frame"))
            except ImageError as err:
                raise ApiError(404, f"the image of record {record_id} is no longer readable: "
                               f"{err}") from err
            image.thumbnail((settings.thumbnail_px, settings.thumbnail_px))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return buffer.getvalue()

        return Response(await work(request, job), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/v1/records/{record_id:path}", tags=["records"], response_model=RecordOut,
             responses=ERRORS, summary="One record by id")
    async def record(request: Request, record_id: str) -> dict:
        def job(current: pipeline.Session) -> dict:
            found = _record(current, record_id)
            out = found.to_dict()
            out.pop("root", None)  # a server path: not the client's business
            out["thumbnail"] = _thumbnail_url(found.id) if found.kind == "image" else None
            return out

        return await work(request, job)

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
