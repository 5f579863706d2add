"""The routes' FastAPI dependencies: the app's Service and Settings, and each form read into
one checked request (texts and uploads within their limits, kinds parsed), so a request that
cannot be served is refused before it waits for the worker.

The index session is not a dependency: it may only be used on the worker thread, through
`Service.run`. Tests replace what a route gets with `app.dependency_overrides[get_service]`.
The API key is not a dependency either: rag/service/limits.py checks it before the body is read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, File, Form, Request, UploadFile

from rag.service.limits import check_text, read_upload
from rag.service.runner import Service, Settings
from rag.types import parse_kinds

KINDS_HELP = "reports, images, guidelines or qa (several: repeat the field)"
ImageUpload = Annotated[UploadFile | None, File(description="image: PNG, JPEG or DICOM")]


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


CurrentService = Annotated[Service, Depends(get_service)]
CurrentSettings = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class SearchRequest:
    image: bytes | None  # the upload, decoded on the worker
    text: str | None
    kinds: tuple[str, ...]
    k: str
    diversity: float
    filters: dict[str, str | None]


@dataclass(frozen=True)
class AskRequest:
    image: bytes | None
    question: str | None
    lang: str
    k: str
    domain: str | None


async def search_request(
    settings: CurrentSettings,
    file: ImageUpload = None,
    text: Annotated[str | None, Form(examples=["left pleural effusion"])] = None,
    to: Annotated[list[str], Form(description=KINDS_HELP)] = ["reports"],  # noqa: B006
    k: Annotated[str, Form(description="a number, or auto", examples=["5"])] = "5",
    domain: Annotated[str | None, Form(examples=["chest-ct"])] = None,
    modality: Annotated[str | None, Form(examples=["ct"])] = None,
    lang: Annotated[str | None, Form(examples=["zh"])] = None,
    body_part: Annotated[str | None, Form()] = None,
    diversity: Annotated[float, Form(ge=0.0, lt=1.0, description="MMR re-ranking: 0 by "
                                     "score alone, 0.3 favours hits that differ")] = 0.0,
) -> SearchRequest:
    check_text(settings, "text", text)
    kinds = parse_kinds(to)  # an unknown kind: InputError, a 422 before any work
    filters = {"domain": domain, "modality": modality, "lang": lang, "body_part": body_part}
    return SearchRequest(await read_upload(settings, file), text, kinds, k, diversity, filters)


async def ask_request(
    settings: CurrentSettings,
    file: ImageUpload = None,
    question: Annotated[str | None, Form(examples=["pleural effusion?"])] = None,
    lang: Annotated[str, Form(pattern="^(en|zh)$", examples=["zh"])] = "en",
    k: Annotated[str, Form(description="a number, or auto")] = "auto",
    domain: Annotated[str | None, Form()] = None,
) -> AskRequest:
    check_text(settings, "question", question)
    return AskRequest(await read_upload(settings, file), question, lang, k, domain)


SearchForm = Annotated[SearchRequest, Depends(search_request)]
AskForm = Annotated[AskRequest, Depends(ask_request)]
