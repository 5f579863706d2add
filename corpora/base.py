"""The CorpusReader interface, the registry of readers and detection of a folder's format."""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rag.registry import registrar
from rag.types import Problem, Record

log = logging.getLogger(__name__)

READERS: dict[str, type[CorpusReader]] = {}
register_reader = registrar(READERS)  # class decorator: a reader by name, for --format


class CorpusError(ValueError):
    """A corpus folder that cannot be read at all; the message says what to do."""


class CorpusReader(ABC):
    """Turns one on-disk format into Records.

    `detect` looks at the folder's content (never only its name); `read` yields Records and,
    for every file it cannot use, a Problem, so that one bad file never stops a build.
    """

    name = "base"
    priority = 50  # detection order: more specific formats have a lower number

    def __init__(self, root: str | Path, follow_symlinks: bool = False):
        self.root = Path(root).resolve()
        self.label = ""  # the part's folder name in a corpus of parts (it may be a link)
        self.follow_symlinks = follow_symlinks

    def outside(self, path: str | Path) -> str:
        """Why a file a reader is about to open must be left out ("" when it may be read).

        A path is relative to the reader's folder. Whatever it names must lie inside that
        folder once links are resolved: a sidecar linked to /etc/passwd, an absolute or
        `../` path in a manifest, an image linked from elsewhere are refused. With
        `follow_symlinks` a link inside the folder may lead anywhere, but a path that leaves
        the folder by itself (absolute, `..`) is still refused."""
        lexical = Path(os.path.normpath(self.root / path))
        if not lexical.is_relative_to(self.root):
            return ("outside the corpus folder (an absolute or ../ path): left out; "
                    "give paths relative to the corpus folder")
        if self.follow_symlinks or lexical.resolve().is_relative_to(self.root):
            return ""
        return ("outside the corpus folder (a link that leads out of it): left out; "
                "pass --follow-symlinks to read linked files")

    @classmethod
    @abstractmethod
    def detect(cls, root: Path) -> bool:
        """True when the folder holds this format."""

    @abstractmethod
    def read(self) -> Iterator[Record | Problem]:
        """Yield the corpus's Records, and a Problem for each file that could not be used."""


@dataclass
class Corpus:
    """One or more detected parts of a corpus folder."""

    root: Path
    readers: list[CorpusReader] = field(default_factory=list)

    @property
    def formats(self) -> list[str]:
        return [f"{r.name}:{r.label or '.'}" for r in self.readers]

    def read(self) -> Iterator[Record | Problem]:
        """Every reader's Records and Problems; an image outside its part's folder (see
        CorpusReader.outside) becomes a Problem, whichever reader found it."""
        for reader in self.readers:
            log.info("reading %s as %s", reader.root, reader.name)
            for item in reader.read():
                why = (reader.outside(item.image) if isinstance(item, Record) and item.image
                       else "")
                yield Problem(item.image, why) if why else item


def _detect_one(folder: Path) -> type[CorpusReader] | None:
    for cls in sorted(READERS.values(), key=lambda c: c.priority):
        try:
            if cls.detect(folder):
                return cls
        except OSError as err:
            log.warning("detecting %s in %s failed: %s", cls.name, folder, err)
    return None


def open_corpus(root: str | Path, fmt: str | None = None,
                follow_symlinks: bool = False) -> Corpus:
    """Detect the format(s) of a corpus folder and return its readers.

    A folder that no reader claims is searched one level down, so a corpus may be made of
    parts (e.g. `reports/` in Open-i XML beside `dicom/` from a PACS export); a part may be a
    linked folder, read as the part's own folder. Inside a part, files outside it are left
    out unless `follow_symlinks` (see CorpusReader.outside).
    """
    import corpora.readers  # noqa: F401 - registers the built-in readers

    root = Path(root).expanduser()
    if not root.exists():
        raise CorpusError(f"corpus folder not found: {root} (check the path; "
                          "`python cli.py demo` builds corpora/demo)")
    if not root.is_dir():
        raise CorpusError(f"{root} is a file; give the folder that holds the corpus")
    root = root.resolve()
    if fmt:
        if fmt not in READERS:
            raise CorpusError(f"unknown corpus format {fmt!r}; known: {', '.join(sorted(READERS))}")
        return Corpus(root, [READERS[fmt](root, follow_symlinks)])
    found = _detect_one(root)
    if found:
        return Corpus(root, [found(root, follow_symlinks)])
    parts = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):  # a linked folder counts too
        if found := _detect_one(sub):
            parts.append(found(sub, follow_symlinks))
            parts[-1].label = sub.name
    if not parts:
        if not any(root.iterdir()):
            raise CorpusError(f"corpus folder {root} is empty: check the path, or copy the "
                              "corpus files into it")
        raise CorpusError(
            f"no known corpus layout in {root}; known formats: {', '.join(sorted(READERS))}. "
            "For your own data use the generic layout: images with a sidecar .txt/.json "
            "report, or a manifest.jsonl (see README)")
    return Corpus(root, parts)
