"""A small MIMIC-CXR / MIMIC-CXR-JPG tree in the real layout: two subjects, JPEG studies and a
DICOM study, reports beside the study folders and in a separate `mimic-cxr-reports` tree, the
metadata and CheXpert tables as plain CSV and the split table gzipped."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import pydicom

from tests.corpora import fixtures

SUBJECTS = ("10000032", "10000764")  # real-looking subject ids: they must never reach a record
PA, LAT, AP = ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
               "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962",
               "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab")
NO_REPORT = "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"
DICOM, SECOND, EMPTY = ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818",
                        "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c",
                        "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4")

FULL = """\
                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 \n\
 INDICATION:  ___F with new onset ascites  // eval for infection
 \n\
 TECHNIQUE:  Chest PA and lateral
 \n\
 COMPARISON:  None.
 \n\
 FINDINGS: \n\
 \n\
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Clips project over the left lung,
 potentially within the breast. The imaged upper abdomen is unremarkable.
 Chronic deformity of the posterior left sixth and seventh ribs are noted.
 \n\
 IMPRESSION: \n\
 \n\
 No acute cardiopulmonary process.
"""

IMPRESSION_ONLY = """\
                                 FINAL REPORT
 HISTORY:  ___-year-old woman with dyspnea.
 \n\
 IMPRESSION:  \n\
 \n\
 1.  Interval increase in the moderate right pleural effusion with adjacent
 atelectasis.
 2.  No pneumothorax.
"""

NO_SECTIONS = """\
                                 FINAL REPORT
 WET READ: ___ ___ ___ 4:15 PM
   No acute process.  Heart size top-normal.
 ______________________________________________________________________________
 CONCLUSION:  Compared to prior chest radiographs ___, mild cardiomegaly is
 stable.  Lungs are clear.
 \n\
 NOTIFICATION:  Dr. ___ was paged at 10:27 on ___.
"""

SHORT = """\
                                 FINAL REPORT
 FINDINGS:  Portable AP view.  Endotracheal tube terminates 4 cm above the
 carina.  Lungs are clear.
 \n\
 IMPRESSION:  ET tube in standard position.
"""

METADATA = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
            "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
            "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
            "PatientOrientationCodeSequence_CodeMeaning"]
CHEXPERT = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
            "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
            "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
            "Support Devices"]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


def _study(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def mimic(root: Path) -> Path:
    one, two = SUBJECTS
    # subject one: a full report with two views, an IMPRESSION-only report, a study without one
    study = _study(root, one, "50414267")
    fixtures.png(study / f"{PA}.jpg", 0)
    fixtures.png(study / f"{LAT}.jpg", 1)
    study.with_suffix(".txt").write_text(FULL)
    study = _study(root, one, "53189527")
    fixtures.png(study / f"{AP}.jpg", 2)
    study.with_suffix(".txt").write_text(IMPRESSION_ONLY)
    fixtures.png(_study(root, one, "56699142") / f"{NO_REPORT}.jpg", 3)
    # subject two: a DICOM study whose report is in the separate reports tree, a study with a
    # zero-byte image, and two report-only studies whose reports cannot be used
    study = _study(root, two, "57375967")
    path = fixtures.dicom(study / f"{DICOM}.dcm", modality="DX")
    ds = pydicom.dcmread(path)
    ds.ViewPosition = "PA"
    ds.save_as(path, enforce_file_format=True)
    reports = root / "mimic-cxr-reports"
    (reports / study.relative_to(root)).parent.mkdir(parents=True)
    (reports / study.relative_to(root)).with_suffix(".txt").write_text(NO_SECTIONS)
    study = _study(root, two, "50771383")
    fixtures.png(study / f"{SECOND}.jpg", 4)
    (study / f"{EMPTY}.jpg").write_bytes(b"")
    study.with_suffix(".txt").write_text(SHORT)
    _study(root, two, "58888888").with_suffix(".txt").write_text("\n   FINAL REPORT\n\n")
    _study(root, two, "59999999").with_suffix(".txt").write_bytes(b"\xff\xfe\x81 IMPRESSION")

    # the metadata table leaves the DICOM out, so its view comes from its header
    meta = [[PA, one, "50414267", "CHEST (PA AND LAT)", "PA", "3056", "2544", "21800506",
             "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"],
            [LAT, one, "50414267", "CHEST (PA AND LAT)", "LATERAL", "3056", "2544", "21800506",
             "213014.531", "CHEST (PA AND LAT)", "lateral", "Erect"],
            [AP, one, "53189527", "CHEST (PORTABLE AP)", "AP", "2705", "2539", "21800626",
             "165500.312", "CHEST (PORTABLE AP)", "antero-posterior", ""],
            [NO_REPORT, one, "56699142", "CHEST (PA AND LAT)", "PA", "3056", "2544", "21800701",
             "101010.000", "CHEST (PA AND LAT)", "postero-anterior", "Erect"],
            [SECOND, two, "50771383", "CHEST (PORTABLE AP)", "AP", "2539", "3050", "21810101",
             "093000.000", "CHEST (PORTABLE AP)", "antero-posterior", ""]]
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(_csv(METADATA, meta))
    split = [[PA, "50414267", one, "train"], [LAT, "50414267", one, "train"],
             [AP, "53189527", one, "train"], [NO_REPORT, "56699142", one, "train"],
             [DICOM, "57375967", two, "validate"], [SECOND, "50771383", two, "validate"],
             [EMPTY, "50771383", two, "validate"],
             ["0a0b0c0d-00000000-00000000-00000000-00000000", "51111111", "19999999", "test"]]
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt", newline="") as handle:
        handle.write(_csv(["dicom_id", "study_id", "subject_id", "split"], split))
    labels = [[one, "50414267", "", "", "", "", "", "", "", "", "1.0", "", "", "", "", ""],
              [one, "53189527", "1.0", "", "", "", "", "", "", "", "", "1.0", "", "", "0.0",
               "-1.0"]]
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        _csv(["subject_id", "study_id", *CHEXPERT], labels))
    return root
