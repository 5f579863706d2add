"""A LlamaIndex retriever over a caselens index, so a LlamaIndex query engine can use our
cross-modal search (image or text -> reports, images, guidelines, qa) as its context.

    from rag.service.llama_retriever import CaselensRetriever
    retriever = CaselensRetriever.from_index("indexes/default", to=("report", "guideline"))
    engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)

An image query travels in `QueryBundle(query_str, image_path=...)`. Needs llama-index-core
(`pip install -e '.[llama]'`); the rest of caselens does not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import ImageNode, NodeWithScore, QueryBundle, TextNode

from rag import pipeline
from rag.types import Hit

METADATA = ("kind", "domain", "modality", "lang", "source", "study", "license")


class CaselensRetriever(BaseRetriever):
    def __init__(self, session: pipeline.Session, to: tuple[str, ...] = ("report",),
                 k: int | str = 5, filters: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.session, self.to, self.k, self.filters = session, to, k, dict(filters or {})

    @classmethod
    def from_index(cls, index_dir: str | Path, **kwargs: Any) -> CaselensRetriever:
        return cls(pipeline.open_index(index_dir), **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        image = getattr(query_bundle, "image_path", None)
        text = query_bundle.query_str if query_bundle.query_str.strip() else None
        hits = self.session.search(image, text, self.to, self.k, **self.filters)
        return [NodeWithScore(node=_node(hit), score=float(hit.score)) for hit in hits]

    def close(self) -> None:
        self.session.close()


def _node(hit: Hit) -> TextNode:
    rec = hit.record
    metadata = {name: getattr(rec, name) for name in METADATA}
    metadata.update(record_id=rec.id, rank=hit.rank, route=hit.route)
    if rec.kind != "image":
        return TextNode(id_=rec.id, text=rec.text, metadata=metadata)
    # an image hit carries its study's report as text, so an LLM has something to read
    report = next((r for r in hit.linked if r.kind == "report"), None)
    metadata["report_id"] = report.id if report else None
    return ImageNode(id_=rec.id, text=report.text if report else rec.text,
                     image_path=str(rec.image_path()), metadata=metadata)
