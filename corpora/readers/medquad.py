"""MedQuAD: consumer-health question-answer pairs from NIH sites, one XML <Document> per topic
(`<Focus>`, `<QAPairs><QAPair><Question qtype=...>`, `<Answer>`), read as knowledge passages
(kind "guideline"). Pairs whose answer was removed upstream are skipped silently: that is the
data set's documented state, not a reading problem."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import shallow_xml_sample
from rag.types import Problem, Record, stable_id

LICENSE = "CC BY 4.0 (MedQuAD, Ben Abacha & Demner-Fushman 2019)"
# a few files use older schemas: <DiseaseFile fid>, or lower-case <doc docid><qaPairs><pair>
TAGS = {"Document": ("id", "source", "Focus", "QAPair", "Question", "Answer"),
        "DiseaseFile": ("fid", "source", "Focus", "QAPair", "Question", "Answer"),
        "doc": ("docid", "corpus", "doctitle-focus", "pair", "question", "answer")}


def _is_medquad(path: Path) -> bool:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return False
    return root.tag in TAGS


@register_reader("medquad")
class MedQuadReader(CorpusReader):
    priority = 20

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(_is_medquad(p) for p in shallow_xml_sample(root))

    def read(self) -> Iterator[Record | Problem]:
        for path in sorted(self.root.rglob("*.xml")):
            rel = path.relative_to(self.root).as_posix()
            if why := self.outside(rel):
                yield Problem(rel, why)
                continue
            try:
                doc = ET.parse(path).getroot()
            except (ET.ParseError, OSError) as err:
                yield Problem(rel, f"unreadable XML: {err}")
                continue
            if doc.tag not in TAGS:
                yield Problem(rel, f"not a MedQuAD document (root element {doc.tag})")
                continue
            id_attr, site_attr, focus_tag, pair_tag, question_tag, answer_tag = TAGS[doc.tag]
            doc_id = doc.get(id_attr) or rel
            focus = (doc.findtext(focus_tag) or "").strip()
            site = doc.get(site_attr, "")
            for pair in doc.iter(pair_tag):
                question = pair.find(question_tag)
                answer = (pair.findtext(answer_tag) or "").strip()
                if question is None or not answer:
                    continue
                qid = question.get("qid") or f"{doc_id}-{pair.get('pid', '')}"
                text = f"{(question.text or '').strip()}\n{answer}"
                # ids from the file, not the document id: CancerGov splits one document over
                # files (0000013_2.xml, 0000013_2_1.xml ...) that reuse its id and qids
                yield Record(stable_id("medquad", rel, qid), "guideline", lang="en", text=text,
                             study=f"medquad:{rel}", source="medquad",
                             license=LICENSE,
                             meta={"focus": focus, "qtype": question.get("qtype", ""),
                                   "document": doc_id, "qid": qid,
                                   "site": site, "url": doc.get("url", ""), "file": rel})
