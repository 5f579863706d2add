"""Domain routing, the reported k cut and near-duplicate removal, on a real (tiny-encoder)
index of two visually distinct domains."""
import json

import numpy as np
import pytest
from PIL import Image

from rag import pipeline
from rag.types import Hit, Record
from retrievers.base import Retriever

DOMAINS = {"chest-xray": ("xray", "Clear lungs, no effusion.", 40),
           "head-mr": ("mr", "No intracranial haemorrhage.", 200)}


def image(path, level, seed):
    arr = np.random.default_rng(seed).normal(level, 8, (48, 48)).clip(0, 255).astype("uint8")
    arr[:, :8] = 255 - level  # a domain-specific edge as well as the brightness
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("route")
    corpus = root / "corpus"
    (corpus / "img").mkdir(parents=True)
    lines = []
    for domain, (modality, text, level) in DOMAINS.items():
        for i in range(8):
            name = f"img/{domain}-{i}.png"
            image(corpus / name, level, seed=i)
            lines.append({"image": name, "text": f"{text} Case {domain} {i}.", "lang": "en",
                          "study": f"{domain}-{i}", "modality": modality, "domain": domain})
    (corpus / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    pipeline.index(corpus, root / "index", encoder="tiny")
    return root


def test_an_image_query_is_routed_to_its_domain(two_domains, tmp_path):
    query = image(tmp_path / "q.png", DOMAINS["head-mr"][2], seed=99)
    with pipeline.open_index(two_domains / "index") as index:
        hits = index.search(image=str(query), to=("images", "reports"), k=5)
        route = index.explain["route"]
    assert route["domains"] == ["head-mr"] and route["confidence"] > 0.6
    assert route["source"] == "knn" and not route["widened"]
    assert hits and {h.record.domain for h in hits} == {"head-mr"}
    assert all("domain=head-mr (routed" in h.route for h in hits)


def test_domain_given_by_the_user_overrides_the_route(two_domains, tmp_path):
    query = image(tmp_path / "q.png", DOMAINS["head-mr"][2], seed=99)
    with pipeline.open_index(two_domains / "index") as index:
        hits = index.search(image=str(query), to="reports", k=3, domain="chest-xray")
        assert index.explain["route"]["source"] == "override"
    assert {h.record.domain for h in hits} == {"chest-xray"}


def test_without_routing_both_domains_can_come_back(two_domains, tmp_path):
    query = image(tmp_path / "q.png", DOMAINS["head-mr"][2], seed=99)
    with pipeline.open_index(two_domains / "index", route=False) as index:
        hits = index.search(image=str(query), to="reports", k=16)
        assert "route" not in index.explain
    assert {h.record.domain for h in hits} == set(DOMAINS)


def test_a_close_vote_widens_the_route(two_domains):
    from retrievers.routing import DomainRouter

    with pipeline.open_index(two_domains / "index") as index:
        router = DomainRouter(index.store, index.retriever.index, k=16, threshold=0.99)
        vector = index.retriever.query_vector(pipeline.make_query(
            str(two_domains / "corpus/img/chest-xray-0.png"), None, "images", 5, "en"))
        route = router.route(vector)
    assert route.widened and route.domains[0] == "chest-xray" and len(route.domains) <= 2


def test_the_k_rule_and_its_cut_are_reported(two_domains):
    with pipeline.open_index(two_domains / "index") as index:
        index.search(text="intracranial haemorrhage", to="reports", k="auto")
        cut = index.explain["cuts"]["report"]
        assert "top score" in cut["rule"] and 1 <= cut["kept"] <= cut["candidates"]
        assert cut["floor"] == pytest.approx(cut["top"] * 0.9, abs=1e-5)
        index.search(text="intracranial haemorrhage", to="reports", k=3)
        assert index.explain["cuts"]["report"] == {**index.explain["cuts"]["report"],
                                                   "rule": "fixed k = 3", "kept": 3}
        plain = index.search(text="intracranial haemorrhage", to="reports", k=3)
        varied = index.search(text="intracranial haemorrhage", to="reports", k=3, diversity=0.5)
        assert index.explain["diversity"] == 0.5 and len(varied) == 3
        assert varied[0].record.id == plain[0].record.id  # the best hit always leads
        with pytest.raises(ValueError, match="diversity"):
            index.search(text="intracranial haemorrhage", diversity=1.0)


def test_near_duplicate_reports_are_dropped_but_different_findings_kept():
    def hit(i, text, score):
        return Hit(Record(f"r:{i}", "report", lang="en", text=text, study=f"s{i}"), score, 0, "x")

    long = ("Heart size is normal. The lungs are clear. There is no pleural effusion or "
            "pneumothorax. No acute cardiopulmonary abnormality.")
    hits = [hit(1, long, 0.9), hit(2, long.replace("is normal", "is within normal limits"), 0.8),
            hit(3, "Small left pleural effusion. Heart size is normal.", 0.7),
            hit(4, long.upper(), 0.6)]
    kept = Retriever._dedupe(hits, near=0.85)
    assert [h.record.id for h in kept] == ["r:1", "r:3"]


def test_diversity_reorders_by_marginal_relevance():
    from retrievers.base import _diversify

    def hit(i, text, score):
        return Hit(Record(f"r:{i}", "report", lang="en", text=text, study=f"s{i}"), score, 0, "x")

    normal = "Heart size is normal. The lungs are clear. No pleural effusion."
    pool = [hit(1, normal, 0.90), hit(2, normal + " No pneumothorax.", 0.89),
            hit(3, "Right lower lobe consolidation, likely pneumonia.", 0.85),
            hit(4, normal + " Old rib fracture.", 0.84)]
    assert [h.record.id for h in _diversify(pool, 3, 0.0)] == ["r:1", "r:2", "r:3"]
    # with a diversity of 0.5 the consolidation report moves ahead of the near-repeat
    assert [h.record.id for h in _diversify(pool, 3, 0.5)][:2] == ["r:1", "r:3"]
    # images have no text overlap: their order stays by score whatever the diversity
    images = [Hit(Record(f"i:{i}", "image", image=f"{i}.png", study=f"s{i}"), 1 - i / 10, 0, "x")
              for i in range(4)]
    assert [h.record.id for h in _diversify(images, 4, 0.9)] == ["i:0", "i:1", "i:2", "i:3"]


def test_the_domain_probe_routes_when_no_indexed_image_can_vote(tmp_path):
    from indexers.base import open_index
    from rag.encoders.domain_probe import DomainProbe
    from rag.store import RecordStore
    from retrievers.routing import DomainRouter

    store = RecordStore(tmp_path / "records.sqlite")
    store.add([Record("r:1", "report", lang="en", text="Normal chest.", domain="chest-xray"),
               Record("r:2", "report", lang="en", text="Normal brain.", domain="head-mr")])
    index = open_index("faiss", tmp_path, 2)  # a reports-only index: no image kind at all
    probe = DomainProbe(["chest-xray", "head-mr", "knee-mr"],
                        np.array([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], np.float32),
                        np.zeros(3, np.float32))
    assert DomainRouter(store, index).route(np.array([1.0, 0.0], np.float32)).source == "none"
    route = DomainRouter(store, index, probe=probe).route(np.array([1.0, 0.0], np.float32))
    assert route.source == "probe" and route.domains == ["chest-xray"]
    assert "knee-mr" not in route.votes  # a domain the index does not hold is never routed to
    assert "by the probe" in route.describe()
    index.close()
    store.close()
