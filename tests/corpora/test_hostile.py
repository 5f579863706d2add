"""A corpus as a hostile or unlucky user makes it: links and paths out of the corpus folder,
manifest lines of the wrong types, a decompression bomb, identifiers in DICOM free text.
Each is a listed problem (or note), the build goes on, and none of it reaches the index."""
from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from corpora.base import open_corpus
from corpora.inspect import inspect_corpus
from rag import pipeline
from tests.fixtures import image_files, layouts, small_corpora
from tests.fixtures.image_files import png_bomb
from tests.fixtures.layouts import slake
from tests.fixtures.mimic import mimic
from tests.fixtures.phi_dicom import FILE_NAME, HEADER_ONLY, IN_FILE_NAME, leaks, phi_dicom
from tests.fixtures.small_corpora import IMAGE_CORPORA

SECRET = "root:x:0:0 the-secret-content"


def problems_of(root: Path, follow: bool = False) -> tuple[dict, dict[str, str]]:
    report = inspect_corpus(root, follow_symlinks=follow)
    return report, {p["path"]: p["reason"] for p in report["problems"]}


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files beside the corpus folder, that links and paths in it lead to."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "passwd").write_text(SECRET + "\n")
    image_files.png(elsewhere / "far.png", 7)
    return elsewhere


def sidecar_corpus(root: Path, outside: Path) -> Path:
    image_files.png(root / "img" / "a.png")
    (root / "img" / "a.txt").write_text("Clear lungs.")
    image_files.png(root / "img" / "b.png", 1)
    (root / "img" / "b.txt").symlink_to(outside / "passwd")  # report.txt -> a secret file
    (root / "img" / "far.png").symlink_to(outside / "far.png")  # an image from elsewhere
    (root / "img" / "far.txt").write_text("Linked image.")
    return root


def test_links_out_of_the_corpus_are_refused_and_listed(tmp_path, outside):
    root = sidecar_corpus(tmp_path / "corpus", outside)
    report, problems = problems_of(root)
    assert set(problems) == {"img/b.txt", "img/far.png"}
    assert all("outside the corpus folder" in why and "--follow-symlinks" in why
               for why in problems.values())
    assert report["counts"]["kind"] == {"image": 2, "report": 2}  # a and b; a's and far's text
    items = list(open_corpus(root).read())
    assert not any(SECRET in json.dumps(vars(item), default=str) for item in items)


def test_follow_symlinks_reads_linked_files_but_never_a_path_that_leaves(tmp_path, outside):
    root = sidecar_corpus(tmp_path / "corpus", outside)
    report, problems = problems_of(root, follow=True)
    assert not problems and report["counts"]["kind"] == {"image": 3, "report": 3}
    result = CliRunner().invoke(app, ["corpus", "inspect", str(root), "--json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["problems"]) == 2
    result = CliRunner().invoke(app, ["corpus", "inspect", str(root), "--json",
                                      "--follow-symlinks"])
    assert result.exit_code == 0 and json.loads(result.stdout)["problems"] == []


def test_manifest_paths_out_of_the_corpus_are_refused_even_when_following_links(tmp_path,
                                                                                outside):
    root = tmp_path / "corpus"
    image_files.png(root / "img" / "a.png")
    lines = [{"image": "img/a.png", "text": "Clear lungs."},
             {"image": str(outside / "far.png"), "text": "Absolute path."},
             {"image": "../../../../../../etc/passwd"},
             {"image": "../elsewhere/far.png"},
             {"image": "img/../img/a.png", "id": "same-folder"}]  # stays inside: fine
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for follow in (False, True):
        _, problems = problems_of(root, follow)
        assert set(problems) == {"manifest.jsonl:2", "manifest.jsonl:3", "manifest.jsonl:4"}
        assert all("outside the corpus folder (an absolute or ../ path)" in why
                   for why in problems.values())


@pytest.mark.parametrize("line,says", [
    ({"image": 123}, r'"image" must be a string, not 123'),
    ({"image": "img/a.png", "meta": "abc"}, r'"meta" must be an object'),
    ({"text": 5}, r'"text" must be a string, not 5'),
    (["img/a.png", "text"], r"must be a JSON object \{\.\.\.\}, not a list"),
    ("just a string", r"must be a JSON object \{\.\.\.\}, not a str"),
    ({"text": "ok", "study": ["a", "b"]}, r'"study" must be a string'),
    ({"text": "ok", "modality": {"x": 1}}, r'"modality" must be a string'),
    ({"text": "ok", "lang": True}, r'"lang" must be a string'),
])
def test_a_manifest_line_of_the_wrong_types_is_a_problem_with_its_line_number(tmp_path, line,
                                                                               says):
    root = tmp_path / "corpus"
    image_files.png(root / "img" / "a.png")
    good = [{"image": "img/a.png", "text": "Clear lungs.", "study": "a"},
            {"text": "Cardiomegaly.", "study": "b", "patient_group": 7}]
    (root / "manifest.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in [*good, line]))
    report, problems = problems_of(root)
    assert list(problems) == ["manifest.jsonl:3"]
    assert re.search(says, problems["manifest.jsonl:3"])
    assert report["counts"]["kind"] == {"image": 1, "report": 2}
    summary = pipeline.index(root, tmp_path / "index", encoder="tiny", backends=("faiss",))
    assert [p.path for p in summary.problems] == ["manifest.jsonl:3"]


def test_a_sidecar_json_of_the_wrong_types_is_a_problem(tmp_path):
    root = tmp_path / "corpus"
    image_files.png(root / "a.png")
    (root / "a.txt").write_text("Clear lungs.")
    image_files.png(root / "b.png", 1)
    (root / "b.json").write_text(json.dumps({"text": 5, "meta": "abc"}))
    _, problems = problems_of(root)
    assert list(problems) == ["b.json"] and '"text" must be a string' in problems["b.json"]


def hostile_corpus(root: Path, outside: Path) -> Path:
    """A corpus of two parts: your own images listed in a manifest (a bomb and an image linked
    to a secret file among them) and a PACS export with identifiers in a file name and its free
    text, and a file linked to the secret file."""
    own = root / "own"
    image_files.png(own / "img" / "a.png")
    (own / "img" / "bomb.png").write_bytes(png_bomb(40_000, 40_000))
    (own / "img" / "scan.png").symlink_to(outside / "passwd")
    lines = [{"image": "img/a.png", "text": "Clear lungs.", "study": "a"},
             {"image": "img/bomb.png", "study": "bomb"}, {"image": "img/scan.png"}]
    (own / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    phi_dicom(root / "pacs" / FILE_NAME)
    image_files.dicom(root / "pacs" / "IM0002")
    (root / "pacs" / "IM0003").symlink_to(outside / "passwd")
    return root


def test_a_hostile_corpus_builds_lists_all_three_and_indexes_none_of_them(tmp_path, outside):
    """The bar of issue 18: a decompression bomb, a link to a secret file and a DICOM with
    identifiers in its free text; the build goes on, lists them, and the index holds none."""
    root = hostile_corpus(tmp_path / "hostile", outside)
    _, inspected = problems_of(root)
    summary = pipeline.index(root, tmp_path / "index", encoder="tiny", backends=("faiss",))
    built = {p.path: p.reason for p in summary.problems}
    for problems in (inspected, built):
        assert "over the limit of 200 megapixels" in problems["img/bomb.png"]
        assert "outside the corpus folder" in problems["manifest.jsonl:3"]
        assert "outside the corpus folder" in problems["IM0003"]
        assert problems[FILE_NAME].startswith("identifiers removed from")
        assert not leaks(json.dumps(problems), HEADER_ONLY)
    assert len(built) == 4, built
    assert summary.formats == ["generic:own", "dicom:pacs"]
    assert sum(summary.counts["image"].values()) == 3  # a.png and the two CT images
    index = tmp_path / "index"
    stored = (index / "records.sqlite").read_bytes()
    assert b"root:x:0:0" not in stored and b"the-secret-content" not in stored
    # raw bytes: the distinctive identifiers (a 4-digit year could sit inside any hex digest)
    assert not leaks(stored.decode("latin-1"), [w for w in HEADER_ONLY if len(w) >= 5])
    with sqlite3.connect(index / "records.sqlite") as db:  # every text value, as whole words
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        values = [v for t in tables for row in db.execute(f'SELECT * FROM "{t}"')
                  for v in row if isinstance(v, str)]
    assert values and not [w for w in HEADER_ONLY
                           if any(re.search(rf"(?<![0-9a-z]){w}(?![0-9a-z])", v, re.I) for v in values)]
    with sqlite3.connect(index / "records.sqlite") as db:
        rows = db.execute("SELECT id, kind, text, image, study, meta FROM records").fetchall()
    assert not [r for r in rows if r[3] and ("bomb" in r[3] or "scan" in r[3])]
    for row in rows:  # the file name's identifiers only in `image`, the path to open
        assert not leaks(json.dumps([row[0], row[2], row[4], row[5]]), IN_FILE_NAME), row


def test_search_and_ask_with_a_bomb_say_one_sentence(tmp_path):
    corpus = tmp_path / "corpus"
    image_files.png(corpus / "a.png")
    (corpus / "a.txt").write_text("Clear lungs.")
    pipeline.index(corpus, tmp_path / "index", encoder="tiny", backends=("faiss",))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(40_000, 40_000))
    for command in ("search", "ask"):
        result = CliRunner().invoke(app, [command, "--image", str(bomb),
                                          "--index", str(tmp_path / "index")])
        assert result.exit_code == 1, result.output
        assert "over the limit of 200 megapixels" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 2


@pytest.mark.skipif(not os.path.exists("/etc/passwd"), reason="no /etc/passwd on this system")
def test_a_sidecar_linked_to_etc_passwd_is_refused(tmp_path):
    root = tmp_path / "corpus"
    image_files.png(root / "scan.png")
    (root / "scan.txt").symlink_to("/etc/passwd")
    image_files.png(root / "ok.png", 1)
    (root / "ok.txt").write_text("Clear lungs.")
    report, problems = problems_of(root)
    assert "outside the corpus folder" in problems["scan.txt"]
    summary = pipeline.index(root, tmp_path / "index", encoder="tiny", backends=("faiss",))
    assert b"root:" not in (tmp_path / "index" / "records.sqlite").read_bytes()
    assert summary.counts["report"] and sum(summary.counts["report"].values()) == 1


# -- every reader: a file linked from outside the corpus folder -------------------------------

LINKABLE = {  # reader: (builder, files it opens: an image, and a text or table)
    **{name: (build, [image]) for name, (build, image, _) in IMAGE_CORPORA.items()},
    "sidecar-report": (small_corpora.sidecars, ["ct/a.txt"]),
    "covctr-table": (layouts.covctr, ["reports.csv"]),
    "covid-table": (layouts.covid, ["metadata.csv"]),
    "medpix-json": (layouts.medpix, ["Descriptions.json"]),
    "openi-csv-json": (small_corpora.openi_csv, ["openi-en.json"]),
    "openi-xml-report": (small_corpora.openi_xml, ["ecgen-radiology/2.xml"]),
    "medquad-xml": (small_corpora.medquad, ["1_CancerGov_QA/2.xml"]),
    "guidelines-file": (small_corpora.guidelines, ["contrast.txt"]),
    "slake-json": (slake, ["test.json"]),
    "mimic-report": (mimic, [small_corpora.mimic_report("50414267")]),
    "mimic-table": (mimic, ["mimic-cxr-2.0.0-split.csv.gz"]),
    "dicom-file": (small_corpora.dicom_folder, ["good/IM0.dcm"]),
}


def link_out(root: Path, rel: str, elsewhere: Path) -> None:
    """Move a corpus file out of the folder and leave a link to it in its place."""
    target = elsewhere / rel.replace("/", "_")
    (root / rel).rename(target)
    (root / rel).symlink_to(target)


@pytest.mark.parametrize("case", sorted(LINKABLE))
def test_every_reader_refuses_a_file_linked_from_outside_unless_asked(tmp_path, outside, case):
    build, files = LINKABLE[case]
    root = build(tmp_path / "corpus")
    before, known = problems_of(root)
    for rel in files:
        link_out(root, rel, outside)
    _, problems = problems_of(root)
    new = {path: why for path, why in problems.items() if path not in known}
    assert new and all("outside the corpus folder" in why for why in new.values()), new
    names = {Path(rel).name for rel in files}  # a manifest's problem is its line
    assert all(Path(path).name in names or any(n in why for n in names)
               for path, why in new.items()), new
    followed, again = problems_of(root, follow=True)
    assert again == known and followed["counts"] == before["counts"]
