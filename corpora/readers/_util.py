"""Small helpers the readers share: CSV headers, file lookup, report text, hashing."""
from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from rag.images import is_image_file


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), else GB18030: Chinese CSVs such as COV-CTR's upstream
    file are GBK-encoded on some systems."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def csv_rows(path: Path) -> Iterator[dict[str, str]]:
    return csv.DictReader(io.StringIO(read_text(path), newline=""))


def ragged(row: dict) -> str:
    """Why a csv.DictReader row is cut short or too long ("" when it is whole): such a row is
    reported and read as far as it goes."""
    if None in row or None in row.values():
        return (f"row does not have the header's {len(row) - (None in row)} columns: "
                "read as far as it goes")
    return ""


def csv_header(path: Path) -> set[str]:
    try:
        return set(next(csv.reader(io.StringIO(read_text(path), newline="")), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()


def image_files(root: Path) -> dict[str, Path]:
    """File name -> path of every image under root (first one wins on a clash)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_image_file(path):
            found.setdefault(path.name, path)
    return found


def shallow_xml_sample(root: Path, n: int = 5) -> list[Path]:
    """A few XML files from the folder or one level down, never deeper: a corpus made of parts
    is then split into its parts rather than claimed whole by one reader."""
    shallow = (p for pattern in ("*.xml", "*/*.xml") for p in root.glob(pattern))
    return list(islice((p for p in shallow if p.is_file()), n))


def hashed(value: str, n: int = 16) -> str:
    """A short one-way hash: for identifiers that could point back to a patient."""
    return hashlib.sha1(value.encode("utf-8")).hexdigest()[:n]


def report_text(findings: str, impression: str, lang: str) -> str:
    labels = ("所见：", "印象：") if lang == "zh" else ("Findings: ", "Impression: ")
    parts = [f"{labels[0]}{findings.strip()}" if findings.strip() else "",
             f"{labels[1]}{impression.strip()}" if impression.strip() else ""]
    return " ".join(p for p in parts if p)


def sections(findings: str, impression: str) -> dict[str, str]:
    return {k: v.strip() for k, v in (("findings", findings), ("impression", impression))
            if v and v.strip()}
