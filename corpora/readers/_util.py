"""Small helpers the readers share: CSV headers, file lookup, report text, hashing."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from rag.images import is_image_file


def csv_header(path: Path) -> set[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return set(next(csv.reader(handle), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()


def image_files(root: Path) -> dict[str, Path]:
    """File name -> path of every image under root (first one wins on a clash)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and is_image_file(path):
            found.setdefault(path.name, path)
    return found


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
