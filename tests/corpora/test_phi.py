"""No patient identifier from a DICOM header or file name reaches a Record: free-text fields
are scrubbed (corpora/readers/phi.py), record ids come from hashed UIDs."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from corpora.base import open_corpus
from corpora.readers.phi import REMOVED, header_identifiers, scrub
from rag.types import Problem
from tests.fixtures.phi_dicom import FILE_NAME, HEADER_ONLY, IN_FILE_NAME, leaks, phi_dicom


def read(root: Path):
    items = list(open_corpus(root).read())
    return ([i for i in items if not isinstance(i, Problem)],
            [i for i in items if isinstance(i, Problem)])


def assert_no_identifiers(records) -> None:
    """Header identifiers nowhere; the file name's only in `image`, the path to open."""
    for rec in records:
        fields = rec.to_dict()
        assert not leaks(json.dumps(fields, ensure_ascii=False), HEADER_ONLY), fields
        rest = {k: v for k, v in fields.items() if k not in ("image", "root")}
        assert not leaks(json.dumps(rest, ensure_ascii=False), IN_FILE_NAME), rest


def test_identifiers_in_every_free_text_field_and_the_file_name_stay_out(tmp_path):
    phi_dicom(tmp_path / "pacs" / "Qwerty^Zyxwv" / FILE_NAME)
    phi_dicom(tmp_path / "pacs" / "Qwerty^Zyxwv" / "cine-PID-8675309.dcm", frames=5)
    records, problems = read(tmp_path / "pacs")
    assert len(records) == 4  # one image, three representative frames of the cine
    assert_no_identifiers(records)
    still = next(r for r in records if "frame" not in r.meta)
    assert re.fullmatch(r"dicom:[0-9a-f]{16}", still.id)
    assert {r.id.split("/")[0] for r in records if "frame" in r.meta} != {still.id}
    assert "CT CHEST for" in still.text and REMOVED in still.text
    assert (still.body_part, still.meta["view_position"]) == ("chest", "")  # from the text
    assert sorted(p.reason.split(":")[0] for p in problems) == [
        "identifiers removed from BodyPartExamined, StudyDescription, SeriesDescription, "
        "ViewPosition"] * 2
    assert not leaks(" ".join(p.reason for p in problems), HEADER_ONLY + IN_FILE_NAME)


def test_a_dicom_id_follows_its_instance_uid_not_its_file_name(tmp_path):
    uid = generate_uid()
    phi_dicom(tmp_path / "a" / FILE_NAME, uid=uid)
    phi_dicom(tmp_path / "b" / "IM0001", uid=uid)
    (first,), _ = read(tmp_path / "a")
    (second,), _ = read(tmp_path / "b")
    assert first.id == second.id and first.image != second.image


def test_a_dicom_without_an_instance_uid_gets_a_hashed_path_id(tmp_path):
    path = phi_dicom(tmp_path / "pacs" / FILE_NAME)
    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID
    ds.save_as(path)
    (rec,), _ = read(tmp_path / "pacs")
    assert re.fullmatch(r"dicom:[0-9a-f]{16}", rec.id)


@pytest.mark.parametrize("text,kept", [
    ("CT THORAX", "CT THORAX"),
    ("Liver Segmentation", "Liver Segmentation"),
    ("5/5mm Plain", "5/5mm Plain"),
    ("C-spine 3 views", "C-spine 3 views"),
    ("Non-ossifying fibroma of distal tibia", "Non-ossifying fibroma of distal tibia"),
    ("CXR PA Jane Smith DOB: 1950-01-02", f"CXR PA Jane Smith {REMOVED}"),  # not in the header
    ("头部CT 1950年1月2日", f"头部CT {REMOVED}"),
    ("study of 2 January 1950, tel 555-1234", f"study of {REMOVED}, tel {REMOVED}"),
    ("MR KNEE accession #A12345678", f"MR KNEE {REMOVED}"),  # a label goes with its value
])
def test_scrub_removes_dates_labels_and_numbers_and_keeps_descriptions(text, kept):
    assert scrub(text) == kept


def test_the_header_names_ids_and_birth_date_are_removed_in_any_notation():
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Smith^Jane^Q", "X-77", "19500102"
    ds.ReferringPhysicianName = "Who^Doctor"
    words = header_identifiers(ds)
    assert scrub("Jane SMITH X-77 born 2.1.1950 for Dr Who", words) == (
        f"{REMOVED} for Dr {REMOVED}")
    assert scrub("chest pa", words) == "chest pa"


def test_the_fixture_dicom_folder_is_read_as_before(tmp_path):
    """Folders without identifiers in their descriptions read exactly as before: no notes."""
    from pydicom.data import get_testdata_file

    root = tmp_path / "plain"
    root.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), root / name)
    records, problems = read(root)
    assert len(records) == 2 and not problems


def test_a_dicom_in_the_generic_layout_gets_a_hashed_id_and_study(tmp_path):
    root = tmp_path / "own"
    phi_dicom(root / "scans" / FILE_NAME)
    (root / "scans" / FILE_NAME).with_suffix(".txt").write_text("Clear lungs.")
    records, _ = read(root)
    assert len(records) == 2
    assert_no_identifiers(records)
