"""MIMIC-CXR (DICOM) and MIMIC-CXR-JPG: `files/p10/p10000032/s50414267/<dicom_id>.dcm|.jpg`,
one free-text report per study beside its folder (`s50414267.txt`), or in a separate
`mimic-cxr-reports/files/...` tree with the same layout, and metadata / split / CheXpert
tables (plain or gzipped CSV) at the root.

The tree holds ~377k images, so it is walked one subject folder at a time; only the tables are
loaded whole. Subject ids are de-identified already, but like every patient-level identifier
they are hashed before they go into a record id, a study key or the split group.
"""
from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import hashed, read_text, report_text
from rag.types import Problem, Record, stable_id

BASE = dict(modality="xray", body_part="chest", domain="chest-xray", source="mimic-cxr",
            license="PhysioNet Credentialed Health Data License 1.5.0 (MIMIC-CXR)")
REPORTS = "mimic-cxr-reports"  # where MIMIC-CXR-JPG users often unpack the reports
IMAGE_SUFFIXES = {".dcm", ".jpg", ".jpeg", ".png"}
GROUP, SUBJECT, STUDY = re.compile(r"p\d\d"), re.compile(r"p\d+"), re.compile(r"s\d+")
# an ALL-CAPS label and a colon at the start of a line: "IMPRESSION:", "WET READ: ___ 4:15 PM"
HEADER = re.compile(r"([A-Z][A-Z ,/&()'-]{2,40}[A-Z)])\s*:(.*)")
TITLES = {"FINAL REPORT", "PRELIMINARY REPORT", "ADDENDUM", "FINAL ADDENDUM"}
RULER = re.compile(r"[_=-]{10,}")  # the line under a WET READ: not a "___" blank
LIST_ITEM = re.compile(r"\d{1,2}[.)]\s")  # "1. ..." starts a new paragraph even when wrapped


def _entries(folder: Path, pattern: re.Pattern, n: int | None = None) -> list[Path]:
    if not folder.is_dir():
        return []
    found = (p for p in folder.iterdir() if p.is_dir() and pattern.fullmatch(p.name))
    return list(islice(found, n)) if n else sorted(found)


def _study_name(path: Path) -> str | None:
    if path.is_dir() and STUDY.fullmatch(path.name):
        return path.name
    if path.suffix == ".txt" and STUDY.fullmatch(path.stem) and path.is_file():
        return path.stem
    return None


def _has_tree(files: Path) -> bool:
    """A few entries of `files/p??/p*/` are enough: the real tree is far too big to walk."""
    for group in _entries(files, GROUP, 3):
        for subject in _entries(group, SUBJECT, 3):
            if any(_study_name(p) for p in islice(subject.iterdir(), 20)):
                return True
    return False


def _table(root: Path, kind: str) -> Path | None:
    """`mimic-cxr-2.0.0-<kind>.csv` or `.csv.gz` (any version) in the root."""
    found = (p for suffix in (".csv", ".csv.gz")
             for p in sorted(root.glob(f"mimic-cxr-*-{kind}{suffix}")))
    return next((p for p in found if p.is_file()), None)


def _open(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _rows(path: Path) -> Iterator[dict[str, str]]:
    """Streamed, so that the 377k-row tables are never held as one text."""
    with _open(path) as handle:
        yield from csv.DictReader(handle)


def _metadata_header(root: Path) -> bool:
    if (table := _table(root, "metadata")) is None:
        return False
    try:
        with _open(table) as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error, EOFError):
        return False
    return {"dicom_id", "study_id", "ViewPosition"} <= set(header)


def parse_report(text: str) -> tuple[dict[str, str], list[str]]:
    """Sections (lower-case label -> text) and every paragraph in order, hard line wraps
    joined. A repeated label (e.g. a second IMPRESSION in an addendum) is appended to the
    first. `___` de-identification blanks stay as they are."""
    found: dict[str, list[str]] = {}
    paragraphs: list[str] = []
    label, lines = None, []

    def close() -> None:
        if lines:
            paragraph = " ".join(" ".join(lines).split())
            paragraphs.append(f"{label.upper()}: {paragraph}" if label and not found[label]
                              else paragraph)
            if label:
                found[label].append(paragraph)
            lines.clear()

    for raw in text.splitlines():
        line = raw.strip()
        header = HEADER.fullmatch(line)
        title = line in TITLES or bool(RULER.fullmatch(line))
        if not line or title or header or LIST_ITEM.match(line):
            close()
        if title:  # ends the section above it
            label, line = None, ""
        if header:
            label = " ".join(header.group(1).lower().split())
            found.setdefault(label, [])
            line = header.group(2).strip()
        if line:
            lines.append(line)
    close()
    return {k: "\n".join(v) for k, v in found.items() if v}, paragraphs


@dataclass
class Tables:
    """The root's metadata, split and CheXpert tables, keyed by dicom id or study folder name
    ("s50414267"); a table that cannot be read is reported and left out."""

    views: dict[str, str] = field(default_factory=dict)  # dicom_id -> ViewPosition
    splits: dict[str, str] = field(default_factory=dict)  # dicom_id or study -> train|validate|test
    labels: dict[str, dict[str, float]] = field(default_factory=dict)  # study -> CheXpert labels

    def load(self, root: Path, outside: Callable[[str], str]) -> Iterator[Problem]:
        """Read the tables; `outside` says why a table must be left out (CorpusReader)."""
        for kind, add in (("metadata", self._metadata), ("split", self._split),
                          ("chexpert", self._chexpert)):
            if (table := _table(root, kind)) is not None:
                if why := outside(table.name):
                    yield Problem(table.name, why)
                    continue
                try:
                    for row in _rows(table):
                        add(row)
                except (OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError) as err:
                    yield Problem(table.name, f"unreadable {kind} table, left out: {err}")

    def _metadata(self, row: dict[str, str]) -> None:
        if row.get("dicom_id"):
            self.views[row["dicom_id"]] = row.get("ViewPosition") or ""

    def _split(self, row: dict[str, str]) -> None:
        if row.get("split"):
            for key in (row.get("dicom_id"), row.get("study_id") and f"s{row['study_id']}"):
                if key:
                    self.splits[key] = row["split"]

    def _chexpert(self, row: dict[str, str]) -> None:
        study = row.pop("study_id", None)
        row.pop("subject_id", None)
        if study:  # 1.0 positive, 0.0 negative, -1.0 uncertain, blank not mentioned
            self.labels[f"s{study}"] = {k: float(v) for k, v in row.items() if k and v}


@register_reader("mimic_cxr")
class MimicCxrReader(CorpusReader):
    priority = 15  # before the DICOM (30) and generic (90) readers, which would split it up

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (_has_tree(root / "files") or _has_tree(root / REPORTS / "files")
                or _metadata_header(root))

    def read(self) -> Iterator[Record | Problem]:
        tables = Tables()
        yield from tables.load(self.root, self.outside)
        for subject, studies in self._subjects():
            for study in studies:
                yield from self._study(subject, study, tables)

    def _subjects(self) -> Iterator[tuple[Path, list[str]]]:
        """(subject folder relative to a tree, its study names), one subject at a time, over the
        image tree and the separate reports tree together."""
        trees = [t for t in (self.root / "files", self.root / REPORTS / "files") if t.is_dir()]

        def names(folders: Iterable[Path], pattern: re.Pattern) -> list[str]:
            return sorted({p.name for f in folders for p in _entries(f, pattern)})

        for group in names(trees, GROUP):
            for subject in names((t / group for t in trees), SUBJECT):
                folders = [t / group / subject for t in trees if (t / group / subject).is_dir()]
                studies = {n for f in folders for p in f.iterdir() if (n := _study_name(p))}
                yield Path("files", group, subject), sorted(studies)

    def _study(self, subject: Path, study: str, tables: Tables) -> Iterator[Record | Problem]:
        group = hashed(subject.name[1:])  # the subject id without its "p"
        key = f"mimic:{group}/{study}"
        folder = self.root / subject / study
        images = sorted(p for p in folder.iterdir() if p.is_file()
                        and p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        report = next((p for p in (self.root / subject / f"{study}.txt",
                                   self.root / REPORTS / subject / f"{study}.txt") if p.is_file()),
                      None)
        if report is None:
            if images:
                yield Problem((subject / study).as_posix(), "no report: images indexed without one")
        else:
            yield from self._report(report, group, study, key, tables)
        for path in images:
            yield from self._image(path, group, study, key, tables)

    def _report(self, path: Path, group: str, study: str, key: str,
                tables: Tables) -> Iterator[Record | Problem]:
        rel = path.relative_to(self.root).as_posix()
        if why := self.outside(rel):
            yield Problem(rel, why)
            return
        try:
            found, paragraphs = parse_report(read_text(path))
        except (OSError, UnicodeDecodeError) as err:
            yield Problem(rel, f"unreadable report: {err}")
            return
        findings, impression = found.get("findings", ""), found.get("impression", "")
        text = (report_text(findings.replace("\n", " "), impression.replace("\n", " "), "en")
                or " ".join(paragraphs))
        if not text:
            yield Problem(rel, "report has no text")
            return
        meta = {"sections": found, "split_group": group}
        if study in tables.splits:
            meta["split"] = tables.splits[study]
        if study in tables.labels:
            meta["chexpert"] = tables.labels[study]
        yield Record(stable_id("mimic-cxr", group, study), "report", lang="en", text=text,
                     study=key, meta=meta, **BASE)

    def _image(self, path: Path, group: str, study: str, key: str,
               tables: Tables) -> Iterator[Record | Problem]:
        rel = path.relative_to(self.root).as_posix()
        if path.stat().st_size == 0:
            yield Problem(rel, "empty image file (0 bytes)")
            return
        dicom_id = path.stem
        meta = {"view": tables.views.get(dicom_id, ""), "split_group": group}
        if not meta["view"] and path.suffix.lower() == ".dcm":
            meta["view"] = _dicom_view(path)
        if dicom_id in tables.splits:
            meta["split"] = tables.splits[dicom_id]
        yield Record(stable_id("mimic-cxr", group, study, dicom_id), "image", image=rel,
                     study=key, meta=meta, root=str(self.root), **BASE)


def _dicom_view(path: Path) -> str:
    """ViewPosition from the header, reading that one tag only (never the patient fields)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return ""  # the build's image check reports an unreadable file
    return str(ds.get("ViewPosition", "") or "")
