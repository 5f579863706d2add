"""Open-i / IU X-ray report XMLs (`ecgen-radiology/*.xml`, root element <eCitation>).

Only the report sections, MeSH terms, licence and image ids are kept: author names in the
XML are dropped, and the "XXXX" de-identification blanks stay as they are.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import image_files, report_text, sections, shallow_xml_sample
from rag.types import Problem, Record, stable_id

BASE = dict(modality="xray", body_part="chest", domain="chest-xray", source="openi")


def _xml_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.xml") if p.is_file())


def _is_ecitation(path: Path) -> bool:
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            return elem.tag == "eCitation"
    except (ET.ParseError, OSError):
        return False
    return False


@register_reader("openi_xml")
class OpenIXmlReader(CorpusReader):
    priority = 20

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(_is_ecitation(p) for p in shallow_xml_sample(root))

    def read(self) -> Iterator[Record | Problem]:
        images = image_files(self.root)
        for path in _xml_files(self.root):
            rel = path.relative_to(self.root).as_posix()
            if why := self.outside(rel):
                yield Problem(rel, why)
                continue
            try:
                tree = ET.parse(path).getroot()
            except (ET.ParseError, OSError) as err:
                yield Problem(rel, f"unreadable XML: {err}")
                continue
            if tree.tag != "eCitation":
                yield Problem(rel, "not an Open-i report (root element is not eCitation)")
                continue
            parts = {(node.get("Label") or "").lower(): (node.text or "").strip()
                     for node in tree.iter("AbstractText")}
            findings, impression = parts.get("findings", ""), parts.get("impression", "")
            if not findings and not impression:
                yield Problem(rel, "no findings or impression")
                continue
            uid = (tree.find("uId").get("id") if tree.find("uId") is not None else path.stem)
            study = f"openi:{uid}"
            image_ids = [node.get("id") for node in tree.iter("parentImage") if node.get("id")]
            licence = (tree.findtext("licenseURL") or tree.findtext("licenseType") or "").strip()
            meta = {"sections": sections(findings, impression), "split_group": uid,
                    "indication": parts.get("indication", ""), "images": image_ids,
                    "mesh": [m.text for m in tree.iter("major") if m.text]}
            yield Record(stable_id("openi", rel), "report", lang="en",
                         text=report_text(findings, impression, "en"), study=study,
                         license=licence, meta=meta, **BASE)
            for image_id in image_ids:
                found = next((images[f"{image_id}{s}"] for s in (".png", ".jpg", ".jpeg", ".dcm")
                              if f"{image_id}{s}" in images), None)
                if found is not None:
                    img_rel = found.relative_to(self.root).as_posix()
                    yield Record(stable_id("openi", img_rel), "image", image=img_rel, study=study,
                                 license=licence, meta={"split_group": uid},
                                 root=str(self.root), **BASE)
