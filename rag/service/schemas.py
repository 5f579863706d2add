"""The API's response models: what the OpenAPI schema at /docs documents for each route."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

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
