"""Folders of DICOM files (a PACS export): image records from the objects with pixel data.

A multi-slice series is indexed by a few representative slices that keep the series link.
Only non-identifying header fields are read into records; the descriptions people type are
scrubbed of identifiers (phi.py) and the change is noted as a problem; record ids, study and
series come from hashed UIDs, since a UID can be traced back to a patient, and never from a
file name (PACS exports name files after patients).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import hashed
from corpora.readers.phi import REMOVED, header_identifiers, scrub
from rag.images import DICOM_SUFFIXES, is_dicom
from rag.types import Problem, Record, stable_id

MODALITIES = {"CR": "xray", "DX": "xray", "DR": "xray", "RG": "xray", "MG": "xray",
              "CT": "ct", "MR": "mr", "US": "us", "NM": "nm", "PT": "nm", "SM": "pathology",
              "OP": "fundus", "ES": "endoscopy"}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, Float, DoubleFloat
DESCRIBE = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription",
            "ViewPosition")
PROSE = ("StudyDescription", "SeriesDescription")  # typed by people; the rest are codes


MAX_SLICES = 3  # representative slices indexed per multi-slice series
# body part from the study / series description when BodyPartExamined is empty (often is)
BODY_WORDS = (("spine", ("spine", "lumbar", "sacr", "vertebra")),
              ("chest", ("chest", "thorax", "thor", "lung", "cxr", "pulm")),
              ("head", ("head", "brain", "skull", "cran", "neuro")),
              ("abdomen", ("abdomen", "abd", "liver", "pancrea", "kidney", "renal")),
              ("pelvis", ("pelvis", "pelvic", "prostate", "hip")),
              ("breast", ("breast", "mammo")), ("heart", ("heart", "cardiac", "coronary")))


def body_part(ds) -> str:
    """From a header, or the mapping of its scrubbed fields (anything with `get`)."""
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
        yield replace(record, id=f"{record.id}/frame-{index}",
                      meta={**record.meta, "frame": index, "series_size": count,
                            "slice_index": index})


def described(ds) -> tuple[dict[str, str], list[str]]:
    """The DESCRIBE fields scrubbed of identifiers (phi.py), and the names of those that
    held some: a description keeps the rest of its words, a code that held one is dropped."""
    identifiers = header_identifiers(ds)
    words, scrubbed = {}, []
    for name in DESCRIBE:
        value = str(ds.get(name, "") or "").strip()
        words[name] = scrub(value, identifiers)
        if words[name] != value:
            scrubbed.append(name)
            if name not in PROSE or not words[name].replace(REMOVED, "").strip(" ;,:-^"):
                words[name] = ""
    return words, scrubbed


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
            rel = path.relative_to(self.root).as_posix()
            if why := self.outside(rel):
                yield Problem(rel, why)
                continue
            if not is_dicom(path):
                if path.suffix.lower() in DICOM_SUFFIXES:  # named DICOM, but empty or damaged
                    yield Problem(rel, "not a readable DICOM file (empty, or no DICM preamble: "
                                       "damaged or cut short)")
                continue
            try:
                ds = pydicom.dcmread(path, defer_size="1 KB")
            except (InvalidDicomError, OSError, EOFError, ValueError) as err:
                yield Problem(rel, f"unreadable DICOM: {err}")
                continue
            if not any(tag in ds for tag in PIXEL_TAGS):
                yield Problem(rel, _no_pixels(ds))
                continue
            words, scrubbed = described(ds)
            if scrubbed:
                yield Problem(rel, f"identifiers removed from {', '.join(scrubbed)}: kept, "
                                   "with the rest of the text")
            modality = MODALITIES.get(str(ds.get("Modality", "")).upper(), "other")
            body = body_part(words)
            study_uid = str(ds.get("StudyInstanceUID", "")) or rel
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            text = "; ".join(f"{name}: {words[name]}" for name in DESCRIBE if words.get(name))
            meta = {"series": hashed(str(ds.get("SeriesInstanceUID", "")) or rel),
                    "view_position": words.get("ViewPosition", ""),
                    "photometric": str(ds.get("PhotometricInterpretation", "")),
                    "frames": int(ds.get("NumberOfFrames", 1) or 1),
                    "rows": int(ds.get("Rows", 0) or 0), "cols": int(ds.get("Columns", 0) or 0),
                    "transfer_syntax": syntax.name if syntax else "",
                    "split_group": hashed(study_uid)}
            instance = str(ds.get("SOPInstanceUID", "") or "")
            own = hashed(f"uid:{instance}" if instance else f"path:{rel}")
            record = Record(stable_id("dicom", own), "image", modality=modality, body_part=body,
                            domain=f"{body}-{modality}", text=text, image=rel,
                            study=f"dicom:{hashed(study_uid)}", source="dicom", meta=meta,
                            root=str(self.root))
            if meta["frames"] > 1:  # an enhanced CT / MR or a cine: the file is the series
                yield from frames(record, meta["frames"])
            else:
                series[meta["series"]].append((_slice_order(ds, rel), record))
        for members in series.values():
            yield from representatives(members)
