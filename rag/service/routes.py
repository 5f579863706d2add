"""The API's routes. Each only delegates: its dependencies read and check the request
(rag/service/dependencies.py), the work runs on the worker thread (rag/service/answers.py),
and the route answers what that returns."""
from __future__ import annotations

import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from rag.service import answers
from rag.service.dependencies import AskForm, CurrentService, SearchForm
from rag.service.runner import ApiError
from rag.service.schemas import ERRORS, AskOut, ErrorOut, RecordOut, SearchOut

router = APIRouter()


@router.get("/healthz", tags=["service"], summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}  # on the event loop: never waits for the worker


@router.get("/readyz", tags=["service"], summary="The index is loaded and can answer",
            responses={503: {"model": ErrorOut}})
async def readyz(service: CurrentService) -> dict[str, Any]:
    if service.stale():  # a new build on disk: load it (through the queue) and report it
        try:
            await service.run(lambda _: None)
        except ApiError:
            pass  # busy or not loadable: report what is loaded
    return answers.readiness(service)


@router.post("/v1/admin/reload", tags=["service"], responses=ERRORS,
             summary="Open the index again now (a changed index is also picked up by itself "
                     "before the next request)")
async def reload(request: Request, service: CurrentService) -> dict[str, Any]:
    started = time.perf_counter()
    await service.worker.run(lambda: service.refresh(force=True), request.receive)
    return {**answers.readiness(service), "seconds": round(time.perf_counter() - started, 3)}


@router.post("/v1/search", tags=["retrieval"], response_model=SearchOut, responses=ERRORS,
             summary="Find reports, images, guidelines or QA pairs for an uploaded image "
                     "(PNG, JPEG, DICOM) or a text")
async def search(request: Request, service: CurrentService, asked: SearchForm) -> dict:
    return await answers.timed(service, partial(answers.search, asked), request.receive)


@router.post("/v1/ask", tags=["reports"], response_model=AskOut, responses=ERRORS,
             summary="Write a report for an image and/or question, in English or Chinese, "
                     "every sentence citing the cases")
async def ask(request: Request, service: CurrentService, asked: AskForm) -> dict:
    return await answers.timed(service, partial(answers.ask, asked), request.receive)


@router.get("/v1/records/{record_id:path}/thumbnail", tags=["records"],
            responses={**ERRORS, 200: {"content": {"image/png": {}}}},
            summary="A PNG thumbnail of an image record")
async def thumbnail(request: Request, service: CurrentService, record_id: str) -> Response:
    png = await answers.on_worker(
        service, lambda session: answers.thumbnail_png(session, record_id, service.settings),
        request.receive)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/v1/records/{record_id:path}", tags=["records"], response_model=RecordOut,
            responses=ERRORS, summary="One record by id")
async def record(request: Request, service: CurrentService, record_id: str) -> dict:
    return await answers.on_worker(
        service, lambda session: answers.record(session, record_id), request.receive)
