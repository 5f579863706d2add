"""MLLM training examples from a corpus's training split: never the image's own study among its
cases, both report languages, a share with a random study's cases, a stable JSONL round trip."""
import pytest

from corpora.reading import read_records
from corpora.splits import split_records
from rag.training.mllm_data import build_examples, load_examples, save_examples
from tests.fixtures.tiny_corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("mllm_data") / "corpus", n_per_class=10,
                       bad_image=False)


def test_examples_never_show_an_image_its_own_report(corpus, tmp_path):
    examples = build_examples(corpus, per_corpus=12, shuffle_share=0.3, encoder="tiny",
                              work_dir=tmp_path, seed=1)
    records, _, _ = read_records(corpus, None)
    by_id = {rec.id: rec for rec in records}
    splits = split_records(records)
    assert examples and {e.lang for e in examples} == {"en", "zh"}
    for example in examples:
        image = next(r for r in records if str(r.image_path()) == example.image)
        assert splits[image.id] == "train"
        assert example.case_ids and all(by_id[c].study != example.study for c in example.case_ids)
        assert [n for n, _ in example.cases] == list(range(1, len(example.cases) + 1))
        heading = "Findings:" if example.lang == "en" else "影像表现："
        assert example.answer.startswith(heading)
    assert any(e.shuffled for e in examples) and not all(e.shuffled for e in examples)
    # answers cite the cases that state the same finding (the corpus has three finding classes)
    assert any("[1]" in e.answer for e in examples if not e.shuffled)
    save_examples(examples, tmp_path / "ex.jsonl")
    assert load_examples(tmp_path / "ex.jsonl") == examples


def test_an_empty_corpus_is_refused_with_its_path(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        build_examples(tmp_path / "empty", encoder="tiny", work_dir=tmp_path)
