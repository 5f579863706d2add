"""Guideline folders: Markdown, plain text, HTML and PDF, split into passages (kind
"guideline") that keep their heading path, with separators that respect Chinese sentence ends.

HTML headings become Markdown headings so that both share one splitter; a PDF's passages keep
the file title and page number as their heading path.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import read_text
from rag.images import is_image_file
from rag.text.words import main_language
from rag.types import Problem, Record, stable_id

SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}
CHUNK_CHARS, OVERLAP_CHARS = 1000, 120
# paragraph, line, then sentence ends in Chinese and English, then words
SEPARATORS = ["\n\n", "\n", "。", "！", "？", "；", ". ", "? ", "! ", "; ", " ", ""]
HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


def _documents(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)


class _HtmlToMarkdown(HTMLParser):
    """Text of an HTML page with <h1>..<h4> turned into Markdown headings; scripts dropped."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in ("h1", "h2", "h3", "h4"):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in ("p", "div", "li", "br", "tr", "section"):
            self.parts.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("h1", "h2", "h3", "h4"):
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


@register_reader("guidelines")
class GuidelinesReader(CorpusReader):
    priority = 80

    @classmethod
    def detect(cls, root: Path) -> bool:
        files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")][:500]
        docs = [p for p in files if p.suffix.lower() in SUFFIXES]
        # sidecar .txt reports beside images are the generic layout, not guidelines
        return bool(docs) and len(docs) * 2 > len(files) and not any(map(is_image_file, files))

    def read(self) -> Iterator[Record | Problem]:
        from langchain_text_splitters import (
            MarkdownHeaderTextSplitter,
            RecursiveCharacterTextSplitter,
        )

        by_heading = MarkdownHeaderTextSplitter(HEADINGS, strip_headers=False)
        by_size = RecursiveCharacterTextSplitter(
            chunk_size=CHUNK_CHARS, chunk_overlap=OVERLAP_CHARS, separators=SEPARATORS,
            keep_separator="end")
        for path in _documents(self.root):
            rel = path.relative_to(self.root).as_posix()
            if why := self.outside(rel):
                yield Problem(rel, why)
                continue
            try:
                sections = list(self._sections(path, by_heading))
            except Exception as err:  # noqa: BLE001 - parsers raise many types on bad files
                yield Problem(rel, f"unreadable {path.suffix} file: {err}")
                continue
            count = 0
            for heading_path, text in sections:
                for chunk in by_size.split_text(text):
                    if chunk.strip():
                        yield Record(stable_id("guideline", rel, str(count)), "guideline",
                                     lang=main_language(chunk), text=chunk.strip(),
                                     study=f"guideline:{rel}", source="guidelines",
                                     meta={"headings": heading_path, "file": rel, "chunk": count})
                        count += 1
            if not count:  # only a PDF can hold its text as images
                hint = " (a scanned PDF needs OCR first)" if path.suffix.lower() == ".pdf" else ""
                yield Problem(rel, f"no text in the file{hint}")

    def _sections(self, path: Path, by_heading) -> Iterator[tuple[list[str], str]]:
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            from pypdf import PdfReader

            for number, page in enumerate(PdfReader(path).pages, 1):
                yield [path.stem, f"page {number}"], page.extract_text() or ""
            return
        text = read_text(path)
        if suffix in (".html", ".htm"):
            parser = _HtmlToMarkdown()
            parser.feed(text)
            text = re.sub(r"\n{3,}", "\n\n", "".join(parser.parts))
        if suffix == ".txt":
            yield [path.stem], text
            return
        for doc in by_heading.split_text(text):
            headings = [doc.metadata[name] for _, name in HEADINGS if name in doc.metadata]
            yield [path.stem, *headings], doc.page_content
