"""The one place where the stages are wired: index, search, ask.

`cli.py` and the HTTP API call only the functions here. An opened `Session` holds the encoder,
record store, vector index, retriever and generator of one index, loaded once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.base import Generator, create_generator
from indexers.base import open_index
from rag.building import BuildSummary, Progress, build_index
from rag.encoder import Encoder, create_encoder
from rag.manifest import ManifestError, check_encoder, read_manifest
from rag.store import RecordStore
from rag.types import Hit, Query, Report
from retrievers.base import AdaptiveK
from retrievers.dense import DenseRetriever

log = logging.getLogger(__name__)

DEFAULT_INDEX = Path("indexes/default")


def index(corpus: str | Path, index_dir: str | Path = DEFAULT_INDEX, encoder: str = "default",
          backends: tuple[str, ...] = ("faiss", "qdrant"), fmt: str | None = None,
          progress: Progress | None = None) -> BuildSummary:
    """Detect the corpus format, encode every record, build the vector indexes."""
    return build_index(corpus, index_dir, create_encoder(encoder), encoder, backends, fmt,
                       progress=progress)


@dataclass
class Session:
    index_dir: Path
    manifest: dict[str, Any]
    encoder: Encoder
    store: RecordStore
    retriever: DenseRetriever
    generator: Generator
    closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for item in self.closers:
            item.close()


def open_session(index_dir: str | Path = DEFAULT_INDEX, encoder: str | None = None,
                 backend: str | None = None, encoder_obj: Encoder | None = None) -> Session:
    """Load an index and everything needed to query it; refuses a mismatched encoder."""
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    model = encoder_obj or create_encoder(encoder or manifest["encoder"]["config"])
    check_encoder(manifest, model.fingerprint, index_dir)
    backend = backend or manifest["backends"][0]
    if backend not in manifest["backends"]:
        raise ManifestError(f"index {index_dir} has no {backend} backend; it has "
                            f"{', '.join(manifest['backends'])}")
    store = RecordStore(index_dir / "records.sqlite", readonly=True)
    vectors = open_index(backend, index_dir, model.dim)
    retriever = DenseRetriever(model, store, vectors, AdaptiveK())
    generator = create_generator("composer", low_confidence=model.low_confidence)
    return Session(index_dir, manifest, model, store, retriever, generator, [vectors, store])


def search(session: Session, query: Query) -> list[Hit]:
    return session.retriever.retrieve(query)


@dataclass
class Answer:
    report: Report
    hits: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report.to_dict(), "hits": [h.to_dict() for h in self.hits]}


def ask(session: Session, query: Query, lang: str | None = None) -> Answer:
    """Retrieve similar cases and compose a cited report in `lang` (default: the query's)."""
    hits = session.retriever.retrieve(query)
    return Answer(session.generator.generate(hits, query, lang or query.lang), hits)
