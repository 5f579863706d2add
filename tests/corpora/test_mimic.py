"""The MIMIC-CXR reader on a fixture tree in the real layout (no MIMIC data is needed)."""
import gzip
import json
import shutil

import pytest

from corpora.base import READERS, open_corpus
from corpora.readers._util import hashed
from corpora.readers.mimic import parse_report
from rag import pipeline
from rag.types import Problem
from tests.fixtures import image_files
from tests.fixtures.mimic import (
    AP,
    DICOM,
    FULL,
    LAT,
    NO_SECTIONS,
    PA,
    SECOND,
    SUBJECTS,
    mimic,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mimic(tmp_path_factory.mktemp("mimic") / "mimic-cxr-jpg")


@pytest.fixture(scope="module")
def read(root):
    corpus = open_corpus(root)
    items = list(corpus.read())
    records = [i for i in items if not isinstance(i, Problem)]
    problems = [i for i in items if isinstance(i, Problem)]
    return corpus, records, problems


def by_study(records, study_id, kind):
    return [r for r in records if r.study.endswith(f"/s{study_id}") and r.kind == kind]


def test_detected_as_mimic_before_the_dicom_and_generic_readers(root, read):
    corpus, _, _ = read
    assert corpus.formats == ["mimic_cxr:."]
    assert READERS["mimic_cxr"].priority < READERS["dicom"].priority < READERS["generic"].priority
    assert not READERS["dicom"].detect(root) and not READERS["generic"].detect(root)


def test_detected_by_the_reports_tree_or_the_metadata_table_alone(tmp_path, root):
    reports = tmp_path / "reports-only"
    shutil.copytree(root / "mimic-cxr-reports", reports / "mimic-cxr-reports")
    assert open_corpus(reports).formats == ["mimic_cxr:."]
    tables = tmp_path / "tables-only"
    tables.mkdir()
    with gzip.open(tables / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as handle:
        handle.write((root / "mimic-cxr-2.0.0-metadata.csv").read_text())
    assert READERS["mimic_cxr"].detect(tables)


def test_a_pacs_export_with_p_and_s_folders_stays_a_dicom_folder(tmp_path):
    image_files.dicom(tmp_path / "files" / "p1" / "s1" / "IM0001")
    assert not READERS["mimic_cxr"].detect(tmp_path)
    assert open_corpus(tmp_path).formats == ["dicom:."]


def test_sections_are_parsed_and_line_wraps_joined():
    found, _ = parse_report(FULL)
    assert set(found) == {"examination", "indication", "technique", "comparison", "findings",
                          "impression"}
    assert found["indication"] == "___F with new onset ascites // eval for infection"
    assert found["findings"].startswith(
        "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular")
    assert "\n" not in found["findings"] and found["impression"] == (
        "No acute cardiopulmonary process.")
    found, paragraphs = parse_report(NO_SECTIONS)
    assert found["wet read"] == "___ ___ ___ 4:15 PM No acute process. Heart size top-normal."
    assert found["conclusion"].endswith("mild cardiomegaly is stable. Lungs are clear.")
    assert not any(p.startswith("___________") or "FINAL REPORT" in p for p in paragraphs)


def test_report_records_text_sections_split_and_labels(read):
    _, records, _ = read
    reports = [r for r in records if r.kind == "report"]
    assert len(reports) == 4
    assert all((r.lang, r.modality, r.body_part, r.domain, r.source)
               == ("en", "xray", "chest", "chest-xray", "mimic-cxr") for r in reports)
    full = by_study(records, "50414267", "report")[0]
    assert full.text.startswith("Findings: There is no focal consolidation")
    assert full.text.endswith("Impression: No acute cardiopulmonary process.")
    assert full.meta["sections"]["comparison"] == "None."
    assert full.meta["split"] == "train" and full.meta["chexpert"] == {"No Finding": 1.0}
    assert full.meta["split_group"] == hashed(SUBJECTS[0])
    only = by_study(records, "53189527", "report")[0]
    assert only.text == ("Impression: 1. Interval increase in the moderate right pleural "
                         "effusion with adjacent atelectasis. 2. No pneumothorax.")
    assert only.meta["sections"]["impression"].count("\n") == 1  # one line per list item
    assert only.meta["chexpert"] == {"Atelectasis": 1.0, "Pleural Effusion": 1.0,
                                     "Pneumothorax": 0.0, "Support Devices": -1.0}
    free = by_study(records, "57375967", "report")[0]  # from the mimic-cxr-reports tree
    assert free.text.startswith("WET READ: ___ ___ ___ 4:15 PM No acute process.")
    assert "CONCLUSION: Compared to prior chest radiographs ___, mild" in free.text
    assert "FINAL REPORT" not in free.text and free.meta["split"] == "validate"


def test_image_records_share_the_study_and_carry_view_and_split(read):
    _, records, _ = read
    images = {r.id.rsplit("/", 1)[1]: r for r in records if r.kind == "image"}
    assert len(images) == 6
    report = by_study(records, "50414267", "report")[0]
    assert images[PA].study == images[LAT].study == report.study
    assert report.study == f"mimic:{hashed(SUBJECTS[0])}/s50414267"
    assert {k: images[k].meta["view"] for k in (PA, LAT, AP, DICOM, SECOND)} == {
        PA: "PA", LAT: "LATERAL", AP: "AP", DICOM: "PA", SECOND: "AP"}  # DICOM: from its header
    assert images[DICOM].image.endswith(f"s57375967/{DICOM}.dcm")
    assert images[DICOM].image_path().is_file()
    assert images[SECOND].meta["split"] == "validate" and images[PA].meta["split"] == "train"


def test_problems_name_the_file_and_the_reason(read):
    _, _, problems = read
    found = {p.path: p.reason for p in problems}
    assert set(found) == {"files/p10/p10000032/s56699142",
                          "files/p10/p10000764/s50771383/096052b7-d256dc40-453a102b-fa7d01c6-"
                          "1b22c6b4.jpg",
                          "files/p10/p10000764/s58888888.txt",
                          "files/p10/p10000764/s59999999.txt"}
    assert found["files/p10/p10000032/s56699142"].startswith("no report")
    assert "0 bytes" in found[next(p for p in found if p.endswith(".jpg"))]
    assert "no text" in found["files/p10/p10000764/s58888888.txt"]
    assert "unreadable" in found["files/p10/p10000764/s59999999.txt"]


def test_no_patient_field_or_subject_id_reaches_a_record(read):
    _, records, _ = read
    derived = json.dumps([[r.id, r.study, r.text, r.meta] for r in records])
    for value in [*image_files.PATIENT.values(), "Doe", *SUBJECTS, "21800506"]:
        assert value not in derived


def test_the_fixture_builds_into_an_index(root, tmp_path):
    summary = pipeline.index(root, tmp_path / "index", encoder="tiny")
    assert summary.formats == ["mimic_cxr:."]
    assert summary.counts["image"] == {"chest-xray": 6}
    assert summary.counts["report"] == {"chest-xray": 4}
    assert len(summary.problems) == 4
