"""`eval report` end to end with the tiny encoder on a synthetic corpus: the split keeps test
studies out of the index, every system is scored, the baselines behave as their definitions say."""
import json

import pytest
from typer.testing import CliRunner

from cli import app
from corpora.reading import read_records
from corpora.splits import split_records
from rag.evaluation.reports import eval_items
from rag.store import RecordStore
from tests.fixtures.tiny_corpus import make_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("report_eval") / "corpus", n_per_class=12,
                       bad_image=False)


def _run(args):
    result = runner.invoke(app, ["eval", "report", *args, "--encoder", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_items_come_from_one_split_and_carry_their_reference(corpus):
    records, _, _ = read_records(corpus, None)
    splits = split_records(records)
    items = eval_items(records, "test", "en", None)
    assert items and all(splits[item.image.id] == "test" for item in items)
    english = {r.study: r.text for r in records if r.kind == "report" and r.lang == "en"}
    assert all(item.reference == english[item.image.study] for item in items)
    assert len(eval_items(records, "test", "en", 2)) == 2
    assert eval_items(records, "test", "fr", None) == []


def test_eval_report_scores_generators_and_baselines_without_leakage(corpus, tmp_path):
    out = _run([str(corpus), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json")])
    assert out["pairs"] > 0 and out["split"] == "test" and out["lang"] == "en"
    assert set(out["systems"]) == {"grounded", "top1", "oracle", "random"}
    grounded = out["systems"]["grounded"]
    assert 0 <= grounded["nlg"]["rouge_l"] <= 1 and "micro_f1" in grounded["labels"]
    assert 0 <= grounded["unsupported_share"] <= 1 and grounded["citation_errors"] == 0
    # the oracle is the retrieved report closest to the reference by ROUGE-L, pair by pair
    assert out["systems"]["oracle"]["nlg"]["rouge_l"] >= out["systems"]["top1"]["nlg"]["rouge_l"]
    assert (tmp_path / "r.md").read_text(encoding="utf-8").count("| grounded |") == 1
    # the index holds the training split only: no test study can be retrieved as its own answer
    records, _, _ = read_records(corpus, None)
    splits = split_records(records)
    test_studies = {r.study for r in records if splits[r.id] == "test"}
    manifest = json.loads((tmp_path / "work" / "corpus-train-tiny" / "manifest.json").read_text())
    assert manifest["subset"] == "split=train"
    store = RecordStore(tmp_path / "work" / "corpus-train-tiny" / "records.sqlite", readonly=True)
    try:
        assert all(not store.by_study(study) for study in test_studies)
    finally:
        store.close()


def test_chinese_is_scored_on_characters_and_jieba_words(corpus, tmp_path):
    out = _run([str(corpus), "--lang", "zh", "--work", str(tmp_path / "work"), "--limit", "3"])
    assert out["pairs"] <= 3 and "nlg_jieba" in out["systems"]["grounded"]
    assert out["examples"] and out["examples"][0]["report"]["lang"] == "zh"


def test_split_all_needs_an_index_and_bad_options_say_so(corpus, tmp_path):
    result = runner.invoke(app, ["eval", "report", str(corpus), "--split", "all",
                                 "--encoder", "tiny", "--work", str(tmp_path)])
    assert result.exit_code != 0 and "--index" in result.output
    result = runner.invoke(app, ["eval", "report", str(corpus), "--lang", "fr"])
    assert result.exit_code != 0 and "--lang" in result.output
    result = runner.invoke(app, ["eval", "report", str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "does not exist" in result.output


def test_shuffled_cases_come_from_another_study_and_copying_is_measured(corpus, tmp_path):
    normal = _run([str(corpus), "--work", str(tmp_path / "work")])
    shuffled = _run([str(corpus), "--work", str(tmp_path / "work"), "--shuffle-cases"])
    assert shuffled["shuffled_cases"] and not normal["shuffled_cases"]
    assert shuffled["systems"]["top1"]["copy_rouge_l"] == pytest.approx(1.0)
    # with the cases of another study, the top-1 case scores lower against the reference
    assert (shuffled["systems"]["top1"]["labels"]["micro_f1"]
            < normal["systems"]["top1"]["labels"]["micro_f1"])
    assert 0 <= shuffled["systems"]["grounded"]["copy_rouge_l"] <= 1
