"""Core types shared by every stage: Record, Problem, Query, Hit, Sentence, Report."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Literal

# qa: a question-answer pair about an image (SLAKE): searchable knowledge, never quoted as a finding
Kind = Literal["image", "report", "guideline", "qa"]
KINDS: tuple[str, ...] = ("image", "report", "guideline", "qa")
# what users may call a kind: singular or plural
KIND_NAMES = {**{kind: kind for kind in KINDS}, **{kind + "s": kind for kind in KINDS}}
MODALITIES: tuple[str, ...] = (
    "xray", "ct", "mr", "us", "pathology", "fundus", "endoscopy", "nm", "other",
)


class InputError(ValueError):
    """A request or argument the user got wrong (unknown kind, bad language, bad k...); its
    message is one sentence that says what to give instead. Internal errors are never this."""


def parse_kinds(to: str | Sequence[str] | None) -> tuple[str, ...]:
    """The record kinds a user asked for: one name or several, singular or plural, in a list
    or comma-separated ("reports,images"); none means reports."""
    names = [to] if isinstance(to, str) else list(to or ())
    parts = [part.strip().lower() for name in names for part in str(name).split(",") if part.strip()]
    unknown = [part for part in parts if part not in KIND_NAMES]
    if unknown:
        raise InputError(f"unknown kind {unknown[0]!r}; give reports, images, guidelines or qa")
    return tuple(dict.fromkeys(KIND_NAMES[part] for part in parts)) or ("report",)


def stable_id(source: str, *parts: str) -> str:
    """A record id derived from the corpus source and a path inside it.

    Never built from a patient identifier: the path parts are hashed when they are long,
    so the id stays short and readable for the usual `source:relative/path` case.
    """
    tail = "/".join(p for p in parts if p)
    if len(tail) > 80:
        tail = hashlib.sha1(tail.encode("utf-8")).hexdigest()[:16]
    return f"{source}:{tail}"


@dataclass
class Record:
    """One indexed item: an image, a report, a guideline passage or a question-answer pair."""

    id: str
    kind: str
    modality: str = "other"
    body_part: str = ""
    domain: str = ""
    lang: str = ""
    text: str = ""
    image: str | None = None  # path relative to the corpus root
    study: str = ""  # groups the images and reports of one study / case
    source: str = ""
    license: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    root: str | None = None  # corpus root the image path is relative to (not a patient field)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"record {self.id!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "image" and not self.image:
            raise ValueError(f"record {self.id!r}: an image record needs an image path")

    def image_path(self) -> Path | None:
        if not self.image:
            return None
        path = Path(self.image)
        return path if path.is_absolute() or not self.root else Path(self.root) / path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Problem:
    """A file a reader or the encoder could not use: reported and counted, never fatal."""

    path: str
    reason: str


@dataclass
class Query:
    image: Any = None  # a file path, or an already decoded PIL image (an upload)
    text: str | None = None
    lang: str = "en"
    k: int | Literal["auto"] = 5
    to: tuple[str, ...] = ("report",)
    filters: dict[str, str] = field(default_factory=dict)  # modality / domain / lang / body_part
    diversity: float = 0.0  # MMR trade-off: 0 ranks by score alone, 0.3 trades some for variety

    def __post_init__(self) -> None:
        if not self.image and not (self.text and self.text.strip()):
            raise InputError("a query needs an image or a text")
        bad = [kind for kind in self.to if kind not in KINDS]
        if bad:
            raise InputError(f"unknown kind(s) {bad}: choose from {', '.join(KINDS)}")
        if self.k != "auto" and (not isinstance(self.k, int) or self.k < 1):
            raise InputError(f"k must be a positive number or 'auto', not {self.k!r}")
        if not 0.0 <= self.diversity < 1.0:
            raise InputError(f"diversity must be in [0, 1), not {self.diversity!r}")


@dataclass
class Hit:
    record: Record
    score: float
    rank: int
    backend: str
    route: str = ""  # how it was found: e.g. "image->report", "text->report+lexical"
    linked: list[Record] = field(default_factory=list)  # e.g. the report of an image hit's study
    cosine: float | None = None  # dense similarity when known (score may be a fused rank score)

    def to_dict(self) -> dict[str, Any]:
        rec = self.record
        return {
            "id": rec.id, "score": round(float(self.score), 6), "rank": self.rank,
            "kind": rec.kind, "domain": rec.domain, "modality": rec.modality, "lang": rec.lang,
            "source": rec.source, "study": rec.study, "image": rec.image, "text": rec.text,
            "license": rec.license, "backend": self.backend, "route": self.route,
            "cosine": None if self.cosine is None else round(float(self.cosine), 6),
            "linked": [{"id": r.id, "kind": r.kind, "lang": r.lang, "text": r.text}
                       for r in self.linked],
        }


@dataclass
class Sentence:
    text: str
    cites: list[str]  # ids of the records that support the sentence
    # set by the support check: does the retrieved evidence back it, how closely, and why not
    supported: bool | None = None
    support: float | None = None
    issues: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "cites": self.cites}
        if self.supported is not None:
            out.update(supported=self.supported, support=self.support, issues=self.issues)
        return out


@dataclass
class Report:
    lang: str
    model: str
    sections: dict[str, list[Sentence]] = field(default_factory=dict)  # findings, impression
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # e.g. a citation of no retrieved case
    seconds: float | None = None  # time the generator took

    def sentences(self) -> list[Sentence]:
        return [s for name in self.sections for s in self.sections[name]]

    @property
    def unsupported(self) -> int:
        return sum(s.supported is False for s in self.sentences())

    def text(self) -> str:
        """The report's sentences as plain text, findings before impression (for scoring)."""
        return " ".join(s.text for s in self.sentences())

    def to_dict(self) -> dict[str, Any]:
        return {
            "lang": self.lang, "model": self.model, "warnings": list(self.warnings),
            "errors": list(self.errors), "unsupported": self.unsupported,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "sections": {name: [s.to_dict() for s in sents]
                         for name, sents in self.sections.items()},
        }
