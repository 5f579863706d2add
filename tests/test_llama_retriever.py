"""The LlamaIndex retriever over a real (tiny-encoder) caselens index, inside a LlamaIndex
query engine driven by LlamaIndex's fake LLM."""
import numpy as np
import pytest
from PIL import Image

from rag import pipeline
from tests.fixtures.tiny_corpus import make_corpus

llama = pytest.importorskip("llama_index.core", reason="llama-index-core not installed "
                            "(pip install -e '.[llama]')")
from llama_index.core.llms import MockLLM  # noqa: E402
from llama_index.core.query_engine import RetrieverQueryEngine  # noqa: E402
from llama_index.core.schema import ImageNode, QueryBundle  # noqa: E402

from rag.service.llama_retriever import CaselensRetriever  # noqa: E402


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    pipeline.index(make_corpus(root / "corpus"), root / "index", encoder="tiny")
    retriever = CaselensRetriever.from_index(root / "index", to=("report",), k=3)
    yield retriever
    retriever.close()


def test_text_query_gives_report_nodes_with_provenance(retriever):
    nodes = retriever.retrieve("large right pleural effusion")
    assert 1 <= len(nodes) <= 3
    assert "effusion" in nodes[0].node.get_content().lower()
    meta = nodes[0].node.metadata
    assert meta["kind"] == "report" and meta["record_id"] == nodes[0].node.node_id
    assert nodes[0].score >= nodes[-1].score


def test_image_query_finds_images_with_their_reports(retriever, tmp_path):
    arr = np.random.default_rng(9).normal(120, 10, (48, 48)).clip(0, 255).astype(np.uint8)
    arr[16:32] = 250  # drawn like the corpus's class 1: left lower lobe consolidation
    Image.fromarray(arr).save(tmp_path / "q.png")
    images = CaselensRetriever(retriever.session, to=("image",), k=2)
    nodes = images.retrieve(QueryBundle("", image_path=str(tmp_path / "q.png")))
    assert nodes and all(isinstance(n.node, ImageNode) for n in nodes)
    assert "consolidation" in nodes[0].node.get_content().lower()
    assert nodes[0].node.metadata["report_id"]


def test_a_llama_index_query_engine_answers_from_our_hits(retriever):
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=16))
    response = engine.query("cardiomegaly without edema")
    assert response.source_nodes
    assert {n.node.metadata["kind"] for n in response.source_nodes} == {"report"}
    assert str(response).strip()  # the fake LLM's answer came back through the engine
