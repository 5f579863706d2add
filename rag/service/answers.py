"""What each route answers, computed with the index session on the worker thread (only
`rag.pipeline`'s Session is called), and the errors of that work as JSON statuses. No request
field is ever used as a file-system path."""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from PIL import Image

from generator.base import GeneratorCrashed
from rag import pipeline
from rag.images import ImageError, load_image, load_image_bytes
from rag.service.dependencies import AskRequest, SearchRequest
from rag.service.runner import ApiError, Receive, Service, Settings

log = logging.getLogger("caselens.api")
T = TypeVar("T")


async def on_worker(service: Service, call: Callable[[pipeline.Session], T],
                    receive: Receive) -> T:
    """call(session) on the worker thread (its user errors answered by the app's handlers);
    dropped unstarted when the client disconnects while it waits."""
    def guarded(session: pipeline.Session) -> T:
        try:
            return call(session)
        except GeneratorCrashed as err:  # only its worker process died: keep serving
            log.error("the language model crashed: %s", err.cause)
            raise ApiError(503, f"the language model crashed ({err.cause}): retry, the "
                                "next request starts it again") from err

    return await service.run(guarded, receive)


async def timed(service: Service, job: Callable[[pipeline.Session, Settings], dict],
                receive: Receive) -> dict:
    """job(session, settings) on the worker, its answer with the seconds it took (waiting
    for the worker included)."""
    started = time.perf_counter()
    out = await on_worker(service, lambda session: job(session, service.settings), receive)
    return {**out, "seconds": round(time.perf_counter() - started, 4)}


def readiness(service: Service) -> dict[str, Any]:
    """What /readyz and a reload report: the loaded index, or 503 with why there is none."""
    session = service.session
    if session is None:
        raise ApiError(503, f"index not ready: {service.error}")
    return {"status": "ready", "index": session.index_dir.name,
            "counts": session.manifest.get("counts", {}),
            "encoder": session.manifest["encoder"]["name"], "reloads": service.reloads}


def search(asked: SearchRequest, session: pipeline.Session, settings: Settings) -> dict:
    hits = session.search(_decode(asked.image, settings), asked.text, asked.kinds, asked.k,
                          asked.diversity, **asked.filters)
    return {"hits": [_hit_out(hit) for hit in hits], "retrieval": session.explain}


def ask(asked: AskRequest, session: pipeline.Session, settings: Settings) -> dict:
    answer = session.ask(_decode(asked.image, settings), asked.question, asked.lang, asked.k,
                         domain=asked.domain)
    return {"report": answer.report.to_dict(), "hits": [_hit_out(hit) for hit in answer.hits],
            "retrieval": answer.retrieval}


def record(session: pipeline.Session, record_id: str) -> dict:
    found = _record(session, record_id)
    out = found.to_dict()
    out.pop("root", None)  # a server path: not the client's business
    out["thumbnail"] = _thumbnail_url(found.id) if found.kind == "image" else None
    return out


def thumbnail_png(session: pipeline.Session, record_id: str, settings: Settings) -> bytes:
    found = _record(session, record_id)
    if found.kind != "image":
        raise ApiError(404, f"record {record_id} is a {found.kind}, not an image")
    # the path comes from the index's own record, never from the request
    try:
        image = load_image(found.image_path(), frame=found.meta.get("frame"))
    except ImageError as err:
        raise ApiError(404, f"the image of record {record_id} is no longer readable: "
                       f"{err}") from err
    image.thumbnail((settings.thumbnail_px, settings.thumbnail_px))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(data: bytes | None, settings: Settings) -> Image.Image | None:
    return None if data is None else load_image_bytes(data, settings.max_pixels)


def _hit_out(hit) -> dict:
    out = hit.to_dict()
    out["thumbnail"] = _thumbnail_url(hit.record.id) if hit.record.kind == "image" else None
    return out


def _record(session: pipeline.Session, record_id: str):
    found = session.record(record_id)
    if found is None:
        raise ApiError(404, f"no record with id {record_id!r} in this index")
    return found


def _thumbnail_url(record_id: str) -> str:
    return f"/v1/records/{quote(record_id, safe='')}/thumbnail"
