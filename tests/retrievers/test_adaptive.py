from rag.types import Hit, Record
from retrievers.base import AdaptiveK, Retriever


def _hits(scores, study=None, text=None):
    return [Hit(Record(f"r{i}", "report", text=text or f"report {i}", study=study or f"s{i}"),
                s, 0, "faiss") for i, s in enumerate(scores)]


def test_adaptive_k_cuts_at_the_score_drop_within_bounds():
    cut = AdaptiveK(k_min=1, k_max=5, ratio=0.9)
    assert len(cut.cut(_hits([0.8, 0.78, 0.75, 0.5, 0.49]))) == 3
    assert len(cut.cut(_hits([0.8, 0.1]))) == 1
    assert len(cut.cut(_hits([0.8] * 9))) == 5
    assert len(AdaptiveK(k_min=3, k_max=5).cut(_hits([0.9, 0.1, 0.05, 0.01]))) == 3
    assert cut.cut([]) == []


def test_dedupe_keeps_one_hit_per_study_and_per_identical_text():
    hits = _hits([0.9, 0.8], study="same") + _hits([0.7, 0.6], text="Lungs are clear.")
    kept = Retriever._dedupe(hits)
    assert [h.score for h in kept] == [0.9, 0.7]
