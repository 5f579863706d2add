"""End to end on the real demo corpus with the default encoder (trained heads), as a user runs it."""
import json

import pytest
from typer.testing import CliRunner

from cli import app
from corpora.demo import build_demo, demo_image
from rag.text.words import has_cjk

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    try:
        build_demo(root / "corpus")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"demo packages missing: {err}")
    result = runner.invoke(app, ["index", str(root / "corpus"), "--index", str(root / "idx"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)


def test_demo_index_counts(demo):
    _, summary = demo
    assert sum(summary["counts"]["report"].values()) > 3900
    assert sum(summary["counts"]["image"].values()) == 12  # 3 frames of each multi-frame file
    assert summary["backends"] == ["faiss", "qdrant"]
    assert not summary["incremental"] and summary["changes"]["added"] > 3900


def test_reindexing_the_same_corpus_encodes_nothing(demo):
    root, first = demo
    result = runner.invoke(app, ["index", str(root / "corpus"), "--index", str(root / "idx"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["incremental"] and again["counts"] == first["counts"]
    assert again["changes"] == {"added": 0, "updated": 0, "removed": 0,
                                "unchanged": first["changes"]["added"]}


def test_ask_in_chinese_about_the_held_out_chest_cr(demo):
    root, _ = demo
    query = demo_image(root / "corpus")
    assert query.is_file()
    assert not list((root / "corpus").rglob(query.name))  # the image is not in the index
    result = runner.invoke(app, ["ask", "--image", str(query), "--lang", "zh",
                                 "--index", str(root / "idx"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    report = answer["report"]
    # the demo corpus has English reports only: the report must say so plainly
    assert any("没有中文报告" in w for w in report["warnings"])
    ids = {h["id"] for h in answer["hits"]} | {r["id"] for h in answer["hits"] for r in h["linked"]}
    sentences = report["sections"]["findings"] + report["sections"]["impression"]
    assert sentences and all(s["cites"] and set(s["cites"]) <= ids for s in sentences)
    assert not any("XXXX" in s["text"] for s in sentences)
    # Chinese, or a warning that says why not (no model installed, or the model failed)
    english = [s for s in sentences if not has_cjk(s["text"])]
    assert not english or any("保留英文" in w or "未安装" in w for w in report["warnings"])
    assert any(h["kind"] == "report" and h["source"] == "openi" for h in answer["hits"])


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_text_search_finds_effusion_reports(demo, backend):
    root, _ = demo
    result = runner.invoke(app, ["search", "--text", "large left pleural effusion", "--to",
                                 "reports", "--k", "5", "--index", str(root / "idx"), "--json",
                                 "--backend", backend])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)["hits"]
    assert len(hits) == 5
    assert sum("effusion" in h["text"].lower() for h in hits) >= 3
