"""Retrieval evaluation: the metric functions on hand-made similarities, and `eval retrieval`
end to end with the tiny encoder on a synthetic corpus."""
import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from rag.evaluation import retrieval as evaluation
from rag.encoders.domain_probe import DomainProbe
from rag.evaluation.retrieval import (
    domain_accuracy,
    link,
    random_baseline,
    rank_queries,
    ranks,
    summarize,
)
from tests.fixtures.tiny_corpus import make_corpus

runner = CliRunner()


def test_ranks_of_the_diagonal_answer():
    similarity = np.array([[0.9, 0.1, 0.2],    # right answer first
                           [0.8, 0.5, 0.7],    # two wrong items above
                           [0.1, 0.6, 0.3]])   # one wrong item above
    assert ranks(similarity).tolist() == [0, 2, 1]


def test_exact_ties_count_against_the_query():
    similarity = np.array([[0.5, 0.5, 0.1],
                           [0.2, 0.4, 0.4],
                           [0.3, 0.3, 0.3]])
    assert ranks(similarity).tolist() == [1, 1, 2]


def test_ranks_use_the_best_of_several_right_answers():
    similarity = np.array([[0.1, 0.9, 0.5, 0.7],
                           [0.6, 0.2, 0.3, 0.1]])
    positives = np.array([[True, False, True, False],   # best right 0.5: 0.9 and 0.7 above
                          [False, True, True, False]])  # best right 0.3: 0.6 above
    assert ranks(similarity, positives).tolist() == [2, 1]


def test_summarize_known_ranks():
    scores = summarize(np.array([0, 2, 9, 20]))
    assert scores["R@1"] == 0.25 and scores["R@5"] == 0.5 and scores["R@10"] == 0.75
    assert scores["MRR"] == pytest.approx(np.mean([1, 1 / 3, 1 / 10, 1 / 21]))
    assert scores["median_rank"] == 6.5 and scores["n"] == 4
    assert summarize([]) == {"R@1": None, "R@5": None, "R@10": None, "MRR": None,
                             "median_rank": None, "n": 0}


def test_random_baseline_with_one_right_answer():
    scores = random_baseline(20, [1] * 7)
    assert scores["R@1"] == pytest.approx(1 / 20) and scores["R@10"] == pytest.approx(0.5)
    assert scores["MRR"] == pytest.approx(np.mean(1 / np.arange(1, 21)))
    assert scores["median_rank"] == 10.5 and scores["n"] == 7
    assert random_baseline(3, [1])["R@5"] == pytest.approx(1.0)  # K beyond the gallery
    assert random_baseline(0, [])["n"] == 0


@pytest.mark.parametrize("gallery_size,rights", [(6, [2]), (7, [1, 3]), (5, [5])])
def test_random_baseline_matches_every_ordering(gallery_size, rights):
    """Brute force: average over every ranking of the gallery, each query in turn."""
    expected = {"R@1": [], "R@5": [], "MRR": []}
    for m in rights:
        for order in itertools.permutations(range(gallery_size)):
            best = min(order.index(item) for item in range(m))  # items 0..m-1 are right
            expected["R@1"].append(best < 1)
            expected["R@5"].append(best < 5)
            expected["MRR"].append(1 / (best + 1))
    scores = random_baseline(gallery_size, rights)
    for key, values in expected.items():
        assert scores[key] == pytest.approx(np.mean(values))


def test_link_makes_identical_texts_one_gallery_item():
    images, reports = ["a.png", "b.png", "c.png"], ["T1", "T1", "T2"]
    queries, gallery, answers = link(images, reports)
    assert queries == [0, 1, 2] and gallery == [0, 2]
    assert [a.tolist() for a in answers] == [[0], [0], [1]]
    queries, gallery, answers = link(reports, images)
    assert queries == [0, 2] and gallery == [0, 1, 2]
    assert [a.tolist() for a in answers] == [[0, 1], [2]]


def test_rank_queries_in_blocks_equals_one_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(11, 4)), rng.normal(size=(9, 4))
    answers = [np.array([i % 9]) for i in range(11)]
    positives = np.zeros((11, 9), bool)
    positives[np.arange(11), np.arange(11) % 9] = True
    monkeypatch.setattr(evaluation, "SIMILARITY_ROWS", 4)
    np.testing.assert_array_equal(rank_queries(queries, gallery, answers),
                                  ranks(queries @ gallery.T, positives))


def test_domain_accuracy_skips_unknown_labels_and_counts_unlearned_domains_wrong():
    probe = DomainProbe(["chest-ct", "head-mr"], np.eye(2, dtype=np.float32), np.zeros(2))
    vectors = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [1, 0]], np.float32)
    labels = ["chest-ct", "head-mr", "head-mr", "unknown-ct", "abdomen-ct"]
    accuracy = domain_accuracy(probe, vectors, labels)
    assert accuracy["n"] == 4 and accuracy["overall"] == 0.5
    assert accuracy["by_domain"]["head-mr"] == {"accuracy": 0.5, "n": 2}
    assert accuracy["not_in_probe"] == ["abdomen-ct"]
    assert domain_accuracy(None, vectors, labels) is None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = make_corpus(tmp_path_factory.mktemp("eval") / "corpus", n_per_class=4,
                       bad_image=False)
    (root / "img" / "c1_3.png").write_bytes(b"not a png")  # a pair whose image is unreadable
    return root


def _in_range(scores):
    assert scores["n"] > 0
    assert all(0 <= scores[key] <= 1 for key in ("R@1", "R@5", "R@10", "MRR"))
    assert scores["R@1"] <= scores["R@5"] <= scores["R@10"]
    assert scores["median_rank"] >= 1


def test_cli_json_structure_and_ranges(corpus, tmp_path):
    out_file = tmp_path / "eval" / "tiny.json"
    result = runner.invoke(app, ["eval", "retrieval", str(corpus), "--split", "all",
                                 "--encoder", "tiny", "--json", "--compare-untrained",
                                 "--out", str(out_file)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["encoder"].startswith("caselens-tiny@") and report["split"] == "all"
    assert report["corpora"] == [str(corpus)] and report["skipped_images"] == 1
    assert report["counts"] == {"pairs": 12, "images": 11, "reports": 11, "text_pairs": 12}
    for key in ("image_to_report", "report_to_image"):
        block = report[key]
        assert set(block) == {"overall", "by_domain", "by_source", "random"}
        _in_range(block["overall"])
        assert block["overall"]["n"] == 11 and block["by_domain"]["chest-xray"]["n"] == 11
        assert block["random"]["R@1"] == pytest.approx(1 / 11)
    for key in ("zh_to_en", "en_to_zh"):
        assert set(report[key]) == {"overall", "by_source", "random"}
        _in_range(report[key]["overall"])
    # the three classes share one Chinese report: 3 zh queries, each with 4 right answers
    assert report["zh_to_en"]["overall"]["n"] == 3 and report["en_to_zh"]["overall"]["n"] == 12
    assert report["domain_accuracy"] is None  # the tiny encoder has no probe
    assert report["untrained"]["image_to_report"]["overall"]["n"] == 11
    assert report["seconds"] >= 0
    assert json.loads(out_file.read_text()) == report
    assert "image -> report" in out_file.with_suffix(".md").read_text()


def test_cli_prints_a_markdown_table(corpus):
    result = runner.invoke(app, ["eval", "retrieval", str(corpus), "--split", "all",
                                 "--encoder", "tiny"])
    assert result.exit_code == 0, result.output
    assert "| image -> report | encoder | 11 |" in result.stdout
    assert "| zh -> en | random | 3 |" in result.stdout


def test_cli_says_which_split_is_empty(tmp_path):
    root = make_corpus(tmp_path / "one", n_per_class=1, bad_image=False)
    manifest = root / "manifest.jsonl"
    lines = [line for line in manifest.read_text().splitlines() if '"c0_0"' in line]
    manifest.write_text("\n".join(lines))  # one study, in the train split
    result = runner.invoke(app, ["eval", "retrieval", str(root), "--split", "test",
                                 "--encoder", "tiny"])
    assert result.exit_code == 1
    assert "'test' split" in result.stderr and "--split all" in result.stderr


@pytest.mark.parametrize("args,words", [
    (["/no/such/corpus", "--split", "all"], "corpus folder not found"),
    (["{corpus}", "--split", "holdout"], "split must be one of"),
    (["{corpus}", "--out", "x.md"], "--out names the JSON file"),
])
def test_cli_errors_are_one_sentence_and_exit_1(corpus, args, words):
    args = [a.format(corpus=corpus) for a in args]
    result = runner.invoke(app, ["eval", "retrieval", *args, "--encoder", "tiny"])
    assert result.exit_code == 1 and words in result.stderr
