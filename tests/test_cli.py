"""The command line through typer's CliRunner: JSON output, progress, errors and exit codes."""
import json

import pytest
from typer.testing import CliRunner

from cli import BUG, app
from tests.fixtures import image_files as fixtures
from tests.fixtures.tiny_corpus import make_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = make_corpus(root / "corpus")
    result = runner.invoke(app, ["index", str(corpus), "--index", str(root / "idx"),
                                 "--encoder", "tiny", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["image"] == {"chest-xray": 18}
    assert any("broken.png" in p["path"] for p in summary["problems"])
    return root / "idx", corpus


def test_search_json_has_provenance(index_dir):
    idx, corpus = index_dir
    result = runner.invoke(app, ["search", "--image", str(corpus / "img/c2_0.png"), "--to",
                                 "images", "--index", str(idx), "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert hits[0]["image"] == "img/c2_0.png"
    assert {"id", "score", "kind", "domain", "source", "text", "linked"} <= set(hits[0])
    text = runner.invoke(app, ["search", "--text", "心影增大", "--to", "reports", "--lang", "zh",
                               "--index", str(idx), "--json", "--backend", "qdrant"])
    assert text.exit_code == 0, text.output
    hits = json.loads(text.stdout)["hits"]
    assert hits and all(h["lang"] == "zh" and h["backend"] == "qdrant" for h in hits)


def test_ask_json_sentences_cite_records(index_dir):
    idx, corpus = index_dir
    result = runner.invoke(app, ["ask", "--image", str(corpus / "img/c1_0.png"), "--lang", "zh",
                                 "--index", str(idx), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    ids = {h["id"] for h in answer["hits"]} | {r["id"] for h in answer["hits"]
                                               for r in h["linked"]}
    findings = answer["report"]["sections"]["findings"]
    assert findings and all(set(s["cites"]) <= ids and s["cites"] for s in findings)
    human = runner.invoke(app, ["ask", "--image", str(corpus / "img/c1_0.png"), "--lang", "en",
                                "--index", str(idx)])
    assert human.exit_code == 0 and "Findings" in human.stdout


@pytest.mark.parametrize("args, message", [
    (["ask", "--image", "nope.png"], "image not found"),
    (["ask", "--lang", "fr", "--text", "x"], "unknown language 'fr' (lang): use en or zh"),
    (["search"], "give an image"),
    (["search", "--text", "x", "--to", "videos"],
     "unknown kind 'videos'; give reports, images, guidelines or qa"),
    (["search", "--text", "x", "--k", "many"], "k must be a number or 'auto', not 'many'"),
    (["ask", "--text", "x", "--generator", "gpt"], "unknown generator 'gpt'"),
])
def test_bad_options_get_one_sentence_and_exit_1(args, message, index_dir):
    idx, _ = index_dir
    result = runner.invoke(app, [*args, "--index", str(idx)])
    assert result.exit_code == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and BUG not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one sentence


def test_an_internal_error_shows_its_traceback_and_says_it_is_a_bug(index_dir, monkeypatch):
    from rag import pipeline

    def broken(session, query):
        raise ValueError("an internal mistake, not the user's")

    monkeypatch.setattr(pipeline, "search", broken)
    idx, _ = index_dir
    result = runner.invoke(app, ["search", "--text", "effusion", "--index", str(idx)])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: an internal mistake, not the user's" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == BUG


def test_the_train_mllm_defaults_are_the_library_s(monkeypatch, tmp_path):
    import rag.training.mllm as training

    seen = {}
    monkeypatch.setattr(training, "train_mllm",
                        lambda cfg, *args, **kwargs: seen.setdefault("cfg", cfg) and {})
    result = runner.invoke(app, ["train", "mllm", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    expected = training.MLLMTrainConfig(corpora=[str(tmp_path)])
    assert seen["cfg"] == expected


def test_bad_image_missing_index_and_bad_corpus(index_dir, tmp_path):
    idx, _ = index_dir
    fixtures.dicom(tmp_path / "sr.dcm", pixels=False)
    result = runner.invoke(app, ["ask", "--image", str(tmp_path / "sr.dcm"), "--index", str(idx)])
    assert result.exit_code == 1 and "no pixel data" in result.stderr
    result = runner.invoke(app, ["search", "--text", "x", "--index", str(tmp_path / "none")])
    assert result.exit_code == 1 and "index not found" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["index", str(tmp_path / "empty"), "--index", str(tmp_path / "i"),
                                 "--encoder", "tiny"])
    assert result.exit_code == 1 and "empty" in result.stderr
    assert not (tmp_path / "i").exists()


def test_other_encoder_is_refused(index_dir, tmp_path):
    from rag.encoders.base import CONFIG_DIR

    idx, _ = index_dir
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**config, "seed": 1}))
    result = runner.invoke(app, ["search", "--text", "effusion", "--index", str(idx),
                                 "--encoder", str(tmp_path / "other.json")])
    assert result.exit_code == 1 and "rebuild the index" in result.stderr


def test_corpus_inspect_counts_and_lists_problems_without_building(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_per_class=2)
    result = runner.invoke(app, ["corpus", "inspect", str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["formats"] == ["generic:."]
    assert report["counts"]["kind"] == {"image": 6, "report": 12}
    assert [p["path"] for p in report["problems"]] == ["img/broken.png"]
    assert report["by_kind"]["report"] == {"chest-xray/en": 6, "chest-xray/zh": 6}
    assert not (tmp_path / "indexes").exists()
    text = runner.invoke(app, ["corpus", "inspect", str(corpus)])
    assert "generic" in text.stdout and "1 problem(s)" in text.stdout and "records/s" in text.stdout
    bad = runner.invoke(app, ["corpus", "inspect", str(tmp_path / "missing")])
    assert bad.exit_code == 1 and "not found" in bad.stderr


def test_train_mllm_and_ask_mllm_refuse_what_is_missing_in_one_sentence(index_dir, tmp_path):
    result = runner.invoke(app, ["train", "mllm", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    idx, corpus = index_dir
    result = runner.invoke(app, ["ask", "--image", str(corpus / "img/c1_0.png"), "--index",
                                 str(idx), "--generator", "mllm", "--mllm", str(tmp_path)])
    assert result.exit_code == 1 and "train mllm" in result.stderr
