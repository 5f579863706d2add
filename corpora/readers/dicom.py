"""Folders of DICOM files (a PACS export): image records from the objects with pixel data.

A multi-slice series is indexed by a few representative slices that keep the series link.
Only non-identifying header fields are read into records; study and series UIDs are hashed,
since a UID can be traced back to a patient.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import hashed
from rag.images import DICOM_SUFFIXES, is_dicom
from rag.types import Problem, Record, stable_id

MODALITIES = {"CR": "xray", "DX": "xray", "DR": "xray", "RG": "xray", "MG": "xray",
              "CT": "ct", "MR": "mr", "US": "us", "NM": "nm", "PT": "nm", "SM": "pathology",
              "OP": "fundus", "ES": "endoscopy"}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, Float, DoubleFloat
DESCRIBE = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription",
            "ViewPosition")


MAX_SLICES = 3  # representative slices indexed per multi-slice series
# body part from the study / series description when BodyPartExamined is empty (often is)
BODY_WORDS = (("spine", ("spine", "lumbar", "sacr", "vertebra")),
              ("chest", ("chest", "thorax", "thor", "lung", "cxr", "pulm")),
              ("head", ("head", "brain", "skull", "cran", "neuro")),
              ("abdomen", ("abdomen", "abd", "liver", "pancrea", "kidney", "renal")),
              ("pelvis", ("pelvis", "pelvic", "prostate", "hip")),
              ("breast", ("breast", "mammo")), ("heart", ("heart", "cardiac", "coronary")))


def body_part(ds) -> str:
    stated = str(ds.get("BodyPartExamined", "") or "").strip().lower().replace(" ", "-")
    if stated:
        return {"thorax": "chest", "skull": "head", "brain": "head", "abd": "abdomen"}.get(
            stated, stated)
    words = " ".join(str(ds.get(n, "") or "") for n in ("StudyDescription",
                                                         "SeriesDescription")).lower()
    return next((part for part, keys in BODY_WORDS if any(k in words for k in keys)), "unknown")


def _slice_order(ds, rel: str) -> tuple:
    """Position along the patient axis when the header has it, else instance number."""
    position = ds.get("ImagePositionPatient")
    z = float(position[2]) if position is not None and len(position) == 3 else float("nan")
    number = int(ds.get("InstanceNumber", 0) or 0)
    return (0, z, rel) if z == z else (1, number, rel)


def picks(count: int) -> list[int]:
    """Which of `count` slices or frames to index: all of a few, else MAX_SLICES spread along
    the stack (at 1/4, 1/2 and 3/4): neighbours look alike and would crowd the results."""
    if count <= MAX_SLICES:
        return list(range(count))
    return sorted({count * (i + 1) // (MAX_SLICES + 1) for i in range(MAX_SLICES)})


def representatives(members: list[tuple[tuple, Record]]) -> Iterator[Record]:
    """A series of many single-frame slices is indexed by a few of them. Every record keeps
    the series id and size, so a hit leads back to the whole series."""
    members.sort(key=lambda item: item[0])
    count = len(members)
    for index in picks(count):
        record = members[index][1]
        record.meta.update(series_size=count, slice_index=index)
        yield record


def _no_pixels(ds) -> str:
    """Why a DICOM object has no pixel data: an image header without pixels is a damaged or
    cut-short file, anything else (a structured report, a presentation state) has none."""
    sop = ds.get("SOPClassUID")
    image_class = sop is not None and "Image" in getattr(sop, "name", "")
    if image_class or any(name in ds for name in ("Rows", "Columns", "ImageType")):
        return "DICOM image without pixel data: the file is damaged or cut short"
    if "SOPClassUID" not in ds and "Modality" not in ds:
        return "DICOM preamble without readable elements: the file is damaged"
    return "DICOM without pixel data (e.g. a structured report): skipped"


def frames(record: Record, count: int) -> Iterator[Record]:
    """A multi-frame object is indexed by a few of its frames, each an image record that
    names its frame (the image loader decodes that one)."""
    for index in picks(count):
        yield replace(record, id=stable_id("dicom", record.image, f"frame-{index}"),
                      meta={**record.meta, "frame": index, "series_size": count,
                            "slice_index": index})


def _files(root: Path) -> Iterator[Path]:
    return (p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("."))


@register_reader("dicom")
class DicomReader(CorpusReader):
    priority = 30

    @classmethod
    def detect(cls, root: Path) -> bool:
        files = list(islice(_files(root), 5000))
        sample = files[::max(1, len(files) // 50)]  # spread over the tree, not its first folder
        return bool(sample) and sum(is_dicom(p) for p in sample) * 2 > len(sample)

    def read(self) -> Iterator[Record | Problem]:
        import pydicom
        from pydicom.errors import InvalidDicomError

        series: dict[str, list[tuple[tuple, Record]]] = defaultdict(list)
        for path in _files(self.root):
            if not is_dicom(path):
                if path.suffix.lower() in DICOM_SUFFIXES:  # named DICOM, but empty or damaged
                    yield Problem(path.relative_to(self.root).as_posix(),
                                  "not a readable DICOM file (empty, or no DICM preamble: "
                                  "damaged or cut short)")
                continue
            rel = path.relative_to(self.root).as_posix()
            try:
                ds = pydicom.dcmread(path, defer_size="1 KB")
            except (InvalidDicomError, OSError, EOFError, ValueError) as err:
                yield Problem(rel, f"unreadable DICOM: {err}")
                continue
            if not any(tag in ds for tag in PIXEL_TAGS):
                yield Problem(rel, _no_pixels(ds))
                continue
            modality = MODALITIES.get(str(ds.get("Modality", "")).upper(), "other")
            body = body_part(ds)
            study_uid = str(ds.get("StudyInstanceUID", "")) or rel
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            text = "; ".join(f"{name}: {ds.get(name)}" for name in DESCRIBE if ds.get(name))
            meta = {"series": hashed(str(ds.get("SeriesInstanceUID", "")) or rel),
                    "view_position": str(ds.get("ViewPosition", "")),
                    "photometric": str(ds.get("PhotometricInterpretation", "")),
                    "frames": int(ds.get("NumberOfFrames", 1) or 1),
                    "rows": int(ds.get("Rows", 0) or 0), "cols": int(ds.get("Columns", 0) or 0),
                    "transfer_syntax": syntax.name if syntax else "",
                    "split_group": hashed(study_uid)}
            record = Record(stable_id("dicom", rel), "image", modality=modality, body_part=body,
                            domain=f"{body}-{modality}", text=text, image=rel,
                            study=f"dicom:{hashed(study_uid)}", source="dicom", meta=meta,
                            root=str(self.root))
            if meta["frames"] > 1:  # an enhanced CT / MR or a cine: the file is the series
                yield from frames(record, meta["frames"])
            else:
                series[meta["series"]].append((_slice_order(ds, rel), record))
        for members in series.values():
            yield from representatives(members)
