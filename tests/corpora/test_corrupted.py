"""Damaged corpora, reader by reader: every bad file is reported with its path and a reason that
says what is wrong, every undamaged record is still read, and an index build over a damaged
corpus indexes the rest and writes the same problems to problems.jsonl."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from corpora.base import CorpusError
from corpora.inspect import inspect_corpus
from rag import pipeline
from tests.fixtures import image_files, layouts
from tests.fixtures.damage import append, spoil, truncate
from tests.fixtures.layouts import slake
from tests.fixtures.mimic import mimic
from tests.fixtures.small_corpora import (DICOM_DAMAGED, IMAGE_CORPORA, dicom_folder, guidelines,
                                          manifest, medquad, mimic_report, openi_csv, openi_xml,
                                          sidecars)

# a reason is a sentence for a person: never a traceback, a source line or an exception class
LEAK = re.compile(r"Traceback|File \"|\b\w*(Error|Exception)\b")


# -- helpers ---------------------------------------------------------------------------------

def inspect(root, fmt=None) -> tuple[Counter, list[tuple[str, str]]]:
    """Record counts by kind and the problems, as `corpus inspect` finds them (nothing built)."""
    report = inspect_corpus(root, fmt)
    return (Counter(report["counts"]["kind"]),
            [(p["path"], p["reason"]) for p in report["problems"]])


def damaged(root, damage, fmt=None) -> tuple[Counter, Counter, list[tuple[str, str]]]:
    """Counts before and after `damage(root)`, and the problems the damage added."""
    counts, before = inspect(root, fmt)
    damage(root)
    after_counts, after = inspect(root, fmt)
    return counts, after_counts, [p for p in after if p not in before]


def assert_reported(problems, expected: dict[str, str]) -> None:
    """Exactly the damaged files, each with a reason matching what is wrong with it."""
    assert sorted(path for path, _ in problems) == sorted(expected), problems
    for path, reason in problems:
        assert re.search(expected[path], reason, re.IGNORECASE), (path, reason)
        assert not LEAK.search(reason), (path, reason)


# -- a damaged image, in every reader that has images -----------------------------------------

IMAGE_DAMAGE = {  # name: (damage, what the reason must say)
    "zero-bytes": (lambda path: path.write_bytes(b""), r"cannot identify|empty|0 bytes"),
    "truncated": (truncate, r"truncated|cut short|cannot identify"),
    "text-renamed": (lambda path: path.write_text("Findings: no acute disease.\n"),
                     r"cannot identify"),
    "missing": (Path.unlink, r"missing|not present"),
}
IMAGE_CASES = [(corpus, damage) for corpus, (_, _, listed) in IMAGE_CORPORA.items()
               for damage in IMAGE_DAMAGE if damage != "missing" or listed]


@pytest.mark.parametrize(("corpus", "damage"), IMAGE_CASES)
def test_a_damaged_image_is_reported_and_the_rest_is_read(tmp_path, corpus, damage):
    build, image, listed = IMAGE_CORPORA[corpus]
    hurt, why = IMAGE_DAMAGE[damage]
    counts, after, new = damaged(build(tmp_path / corpus), lambda root: hurt(root / image))
    assert_reported(new, {listed if damage == "missing" else image: why})
    assert after == counts - Counter(image=1)


# -- damaged tables, reports, XML and JSON, reader by reader ----------------------------------

def covctr_gbk(root):
    table = root / "reports.csv"
    table.write_bytes(table.read_text(encoding="utf-8").encode("gbk"))


def covctr_short_row(root):
    table = root / "reports.csv"
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "a%1.png,双肺未见异常。\r\n"  # findings only: the other four columns are gone
    table.write_text("".join(lines), encoding="utf-8")


def covid_short_row(root):
    image_files.png(root / "images" / "x2.jpg", 5)
    append(root / "metadata.csv", "19,0,F,50,COVID-19,AP,X-ray,,,images,x2.jpg,10.1/y\r\n")


def manifest_bad_json(root):
    append(root / "manifest.jsonl", '{"text": "Cardiomegaly, cut off in the mid\n')


def manifest_bad_utf8(root):
    append(root / "manifest.jsonl", b'{"text": "Pleural effusion \xff\xfe."}\n'
           + json.dumps({"text": "Cardiomegaly.", "study": "c"}).encode() + b"\n")


def manifest_duplicate_id(root):
    append(root / "manifest.jsonl", "".join(json.dumps(x) + "\n" for x in (
        {"id": "case-9", "text": "Pneumothorax.", "study": "d"},
        {"id": "case-9", "text": "Rib fracture.", "study": "e"})))


def medpix_bad_entries(root):
    descs = json.loads((root / "Descriptions.json").read_text())
    descs += ["a caption without its object", {"U_id": "MPX1", "Type": "CT"},
              {"image": "MPX1_synpic2", "Type": "CT"}]
    (root / "Descriptions.json").write_text(json.dumps(descs))


def slake_bad_row(root):
    rows = json.loads((root / "train.json").read_text(encoding="utf-8"))
    (root / "train.json").write_text(json.dumps([*rows, "a question without its object"]))


def add_file(name, data):
    def damage(root):
        (root / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return damage


def both(*damages):
    def damage(root):
        for one in damages:
            one(root)
    return damage


CASES = [  # builder, damage, {problem path: reason}, change in the counts by kind, format
    pytest.param(layouts.covctr, covctr_gbk, {}, {}, None, id="covctr-gbk-table-still-reads"),
    pytest.param(layouts.covctr, covctr_short_row, {"reports.csv:3": "column"}, {"report": -1},
                 None, id="covctr-row-missing-columns"),
    pytest.param(layouts.covid, covid_short_row, {"metadata.csv:4": "column"}, {"image": 1},
                 None, id="covid-row-missing-columns"),
    pytest.param(manifest, manifest_bad_json, {"manifest.jsonl:4": "not valid JSON"}, {}, None,
                 id="manifest-malformed-json-line"),
    pytest.param(manifest, manifest_bad_utf8, {"manifest.jsonl:4": "not UTF-8"}, {"report": 1},
                 None, id="manifest-invalid-utf8-line"),
    pytest.param(manifest, manifest_duplicate_id, {"manifest.jsonl:5": "duplicate id case-9"},
                 {"report": 1}, None, id="manifest-duplicate-id"),
    pytest.param(sidecars, lambda root: truncate(root / "ct" / "b.json"),
                 {"ct/b.json": "unreadable sidecar"}, {"report": -1}, None,
                 id="sidecar-malformed-json"),
    pytest.param(sidecars, lambda root: spoil(root / "ct" / "a.txt", b"glass"),
                 {"ct/a.txt": "unreadable sidecar.*decode"}, {"report": -1}, None,
                 id="sidecar-invalid-utf8"),
    pytest.param(guidelines, lambda root: truncate(root / "fleischner.pdf"),
                 {"fleischner.pdf": r"unreadable \.pdf"}, {"guideline": -1}, None,
                 id="guidelines-truncated-pdf"),
    pytest.param(guidelines, add_file("scan.pdf", "Findings: a text file named .pdf"),
                 {"scan.pdf": r"unreadable \.pdf"}, {}, None, id="guidelines-not-a-pdf"),
    pytest.param(guidelines, add_file("empty.md", ""), {"empty.md": "^no text in the file$"},
                 {}, None, id="guidelines-empty-markdown"),
    pytest.param(guidelines, add_file("bad.md", b"# Contrast\n\nRenal \xff\xfe function.\n"),
                 {"bad.md": r"unreadable \.md.*decode"}, {}, None,
                 id="guidelines-markdown-invalid-bytes"),
    pytest.param(layouts.medpix, lambda root: spoil(root / "Case_topic.json", b"Thick"),
                 {"Case_topic.json": "unreadable MedPix JSON.*decode"},
                 {"report": -1, "guideline": -1}, None, id="medpix-case-topic-invalid-utf8"),
    pytest.param(layouts.medpix, lambda root: truncate(root / "Descriptions.json"),
                 {"Descriptions.json": "unreadable MedPix JSON"}, {"image": -1}, "medpix",
                 id="medpix-descriptions-malformed"),
    pytest.param(layouts.medpix, medpix_bad_entries,
                 {"Descriptions.json:#2": "not a JSON object",
                  "Descriptions.json:#3": "without 'image'",
                  "Descriptions.json:MPX1_synpic2": "without 'U_id'"}, {}, None,
                 id="medpix-malformed-entries"),
    pytest.param(medquad, lambda root: truncate(root / "1_CancerGov_QA" / "2.xml"),
                 {"1_CancerGov_QA/2.xml": "unreadable XML"}, {"guideline": -1}, None,
                 id="medquad-malformed-xml"),
    pytest.param(medquad, lambda root: spoil(root / "1_CancerGov_QA" / "2.xml", b"Fluid"),
                 {"1_CancerGov_QA/2.xml": "unreadable XML"}, {"guideline": -1}, None,
                 id="medquad-invalid-utf8"),
    pytest.param(medquad, add_file("1_CancerGov_QA/3.xml", "<html><body>moved</body></html>"),
                 {"1_CancerGov_QA/3.xml": "not a MedQuAD document"}, {}, None,
                 id="medquad-other-xml"),
    pytest.param(mimic, lambda root: (root / mimic_report("50414267")).write_text(""),
                 {mimic_report("50414267"): "no text"}, {"report": -1}, None,
                 id="mimic-empty-report"),
    pytest.param(mimic, lambda root: spoil(root / mimic_report("53189527"), b"Interval"),
                 {mimic_report("53189527"): "unreadable report.*decode"}, {"report": -1}, None,
                 id="mimic-report-invalid-bytes"),
    pytest.param(mimic, lambda root: truncate(root / "mimic-cxr-2.0.0-split.csv.gz", 0.3),
                 {"mimic-cxr-2.0.0-split.csv.gz": "unreadable split table"}, {}, None,
                 id="mimic-truncated-gz-table"),
    pytest.param(openi_csv, lambda root: append(root / "indiana_reports.csv",
                                                "9,normal,,Xray,Cough,,Heart normal.\r\n"),
                 {"indiana_reports.csv:4": "column"}, {"report": 1}, None,
                 id="openi-csv-row-missing-columns"),
    pytest.param(openi_csv, both(lambda root: truncate(root / "openi-en.json"),
                                 lambda root: spoil(root / "openi-zh.json", "心影".encode())),
                 {"openi-en.json": "unreadable bilingual", "openi-zh.json": "unreadable.*decode"},
                 {"report": -4}, None, id="openi-csv-bilingual-files-damaged"),
    pytest.param(openi_xml, both(lambda root: truncate(root / "ecgen-radiology" / "2.xml"),
                                 lambda root: spoil(root / "ecgen-radiology" / "1.xml", b"size")),
                 # 1.xml's image goes with it: only the report names it
                 {"ecgen-radiology/1.xml": "unreadable XML", "ecgen-radiology/2.xml":
                  "unreadable XML"}, {"report": -2, "image": -1}, None,
                 id="openi-xml-malformed-and-invalid-utf8"),
    pytest.param(slake, lambda root: truncate(root / "test.json"),
                 {"test.json": "unreadable SLAKE JSON"}, {"qa": -1}, None,
                 id="slake-malformed-json"),
    pytest.param(slake, lambda root: spoil(root / "test.json", b"lung"),
                 {"test.json": "unreadable SLAKE JSON.*decode"}, {"qa": -1}, None,
                 id="slake-invalid-utf8"),
    pytest.param(slake, slake_bad_row, {"train.json#3": "question without"}, {}, None,
                 id="slake-malformed-row"),
]


@pytest.mark.parametrize(("build", "damage", "expected", "change", "fmt"), CASES)
def test_a_damaged_file_is_reported_and_the_rest_is_read(tmp_path, build, damage, expected,
                                                         change, fmt):
    counts, after, new = damaged(build(tmp_path / "corpus"), damage, fmt)
    assert_reported(new, expected)
    counts.update(change)
    assert after == counts


def test_damaged_dicom_files_are_reported_and_the_good_ones_read(tmp_path):
    counts, problems = inspect(dicom_folder(tmp_path / "pacs"))
    assert_reported(problems, {
        "bad/truncated.dcm": "cut short", "bad/no-pixels.dcm": "without pixel data",
        **{path: "DICOM" for path in DICOM_DAMAGED[2:]}})
    assert counts == Counter(image=3)


def test_a_cut_or_garbled_dicom_is_called_damaged(tmp_path):
    _, problems = inspect(dicom_folder(tmp_path / "pacs"))
    reasons = dict(problems)
    for path in DICOM_DAMAGED[2:]:
        assert "structured report" not in reasons[path], (path, reasons[path])
        assert re.search(r"truncat|cut short|corrupt|damaged|incomplete", reasons[path]), path


def test_a_zero_byte_dicom_file_is_reported(tmp_path):
    root = dicom_folder(tmp_path / "pacs")
    (root / "good" / "IM9.dcm").write_bytes(b"")
    _, problems = inspect(root)
    assert "good/IM9.dcm" in dict(problems)


# -- index builds over damaged corpora --------------------------------------------------------

def assert_build(tmp_path, root, expected: dict[str, str], counts: dict[str, int]) -> None:
    """`inspect` lists the problems without writing anything; `index` indexes everything else
    and reports the same files, in its summary and in problems.jsonl."""
    files = sorted(tmp_path.rglob("*"))
    _, inspected = inspect(root)
    assert sorted(tmp_path.rglob("*")) == files  # nothing built, nothing written
    summary = pipeline.index(root, tmp_path / "index", encoder="tiny")
    problems = [(p.path, p.reason) for p in summary.problems]
    assert_reported(problems, expected)
    assert sorted(path for path, _ in inspected) == sorted(path for path, _ in problems)
    assert {kind: sum(by.values()) for kind, by in summary.counts.items()} == counts
    lines = (tmp_path / "index" / "problems.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"path": p, "reason": r} for p, r in problems]


def test_index_of_damaged_sidecar_corpus(tmp_path):
    root = sidecars(tmp_path / "corpus")
    truncate(root / "ct" / "a.png")
    (root / "xr" / "c.png").write_bytes(b"")
    truncate(root / "ct" / "b.json")
    assert_build(tmp_path, root, {"ct/a.png": "truncated", "xr/c.png": "cannot identify",
                                  "ct/b.json": "unreadable sidecar"},
                 # the reports of a.png and c.png are sound and kept; b.jpg keeps its image
                 {"image": 1, "report": 2})


def test_index_of_damaged_dicom_folder(tmp_path):
    assert_build(tmp_path, dicom_folder(tmp_path / "pacs"), {
        "bad/truncated.dcm": "less than expected|cut short",
        "bad/no-pixels.dcm": "without pixel data",
        **{path: "DICOM" for path in DICOM_DAMAGED[2:]}}, {"image": 3})


def test_index_of_damaged_gbk_covctr(tmp_path):
    root = layouts.covctr(tmp_path / "covctr")
    covctr_gbk(root)
    (root / "images" / "CT_COVID" / "a%0.png").write_bytes(b"")
    (root / "images" / "CT_NonCOVID" / "lonely.png").write_text("not an image")
    assert_build(tmp_path, root, {"missing.png": "missing",
                                  "images/CT_COVID/a%0.png": "cannot identify",
                                  "images/CT_NonCOVID/lonely.png": "cannot identify"},
                 {"image": 1, "report": 6})


def test_a_failed_rebuild_leaves_the_index_as_it_was(tmp_path):
    root = manifest(tmp_path / "corpus")
    index_dir = tmp_path / "index"
    first = pipeline.index(root, index_dir, encoder="tiny")
    before = {p.name: p.read_bytes() for p in index_dir.iterdir() if p.is_file()}
    # still a manifest, with nothing usable left in it
    (root / "manifest.jsonl").write_bytes(b'{"text": ""}\n{"text": "\xff"}\n[1, 2]\n')
    with pytest.raises(CorpusError, match="no usable records.*inspect"):
        pipeline.index(root, index_dir, encoder="tiny")
    assert {p.name: p.read_bytes() for p in index_dir.iterdir() if p.is_file()} == before
    assert first.counts == json.loads((index_dir / "manifest.json").read_text())["counts"]
    assert not (tmp_path / ".index.building").exists()  # the work copy is gone


# -- a corpus that cannot be read at all ------------------------------------------------------

def unknown_layout(tmp_path):
    root = tmp_path / "odd"
    image_files.png(root / "scan.png")  # an image without a report, and a table of another kind
    (root / "notes.csv").write_text("name,value\nscan.png,1\n")
    return root


@pytest.mark.parametrize(("make", "says"), [
    (lambda tmp_path: tmp_path / "no-such-folder", r"not found.*check the path"),
    (lambda tmp_path: image_files.png(tmp_path / "one.png"), r"is a file.*give the folder"),
    (unknown_layout, r"no known corpus layout.*generic layout.*manifest\.jsonl"),
], ids=["wrong-path", "a-file", "unknown-layout"])
def test_a_corpus_that_cannot_be_read_says_what_to_do(tmp_path, make, says):
    root = make(tmp_path)
    with pytest.raises(CorpusError, match=re.compile(says, re.DOTALL)):
        inspect_corpus(root)
    with pytest.raises(CorpusError, match=re.compile(says, re.DOTALL)):
        pipeline.index(root, tmp_path / "index", encoder="tiny")
    assert not (tmp_path / "index").exists()


def test_an_empty_folder_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"is empty.*\b(put|copy|add|check)\b"):
        inspect_corpus(tmp_path / "empty")
