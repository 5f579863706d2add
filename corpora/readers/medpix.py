"""MedPix 2.0: CT and MR cases (`Case_topic.json`) with one caption per image
(`Descriptions.json`). A case is a study: its report, its images (each with its caption as the
image's own text) and its topic discussion as a guideline passage. Age and sex are left out."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import image_files, report_text, sections
from rag.types import Problem, Record, stable_id

# "Location Category" to body region. "Reproductive and Urinary System" is an organ system, not
# a region: most of its images show the kidneys (77 of its 107 "Genitourinary" CT captions say
# so), the rest bladder, prostate or uterus, all on the abdomino-pelvic CT / MR that "abdomen"
# names here. As "pelvis", the domain probe named one held-out image of it in four, most taken
# for abdomen.
BODY = {"Head": "head", "Spine and Muscles": "spine", "Thorax": "chest", "Abdomen": "abdomen",
        "Reproductive and Urinary System": "abdomen"}
MODALITY = {"CT": "ct", "MR": "mr", "MRI": "mr"}
LICENSE = "MedPix 2.0 research use (cite Siragusa et al., 2025; content from NLM MedPix)"


def _load(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _malformed(name: str, number: int, entry, key: str, err: Exception) -> Problem:
    """An entry that cannot be used, named by its id when it has one, else by its position."""
    label = entry.get(key) if isinstance(entry, dict) else None
    why = ("entry is not a JSON object" if not isinstance(entry, dict) else
           f"entry without {err}" if isinstance(err, KeyError) else f"malformed entry: {err}")
    return Problem(f"{name}:{label or f'#{number}'}", why)


@register_reader("medpix")
class MedPixReader(CorpusReader):
    priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        cases, descs = root / "Case_topic.json", root / "Descriptions.json"
        if not (cases.is_file() and descs.is_file()):
            return False
        data = _load(descs)
        return isinstance(data, list) and bool(data) and {"U_id", "image"} <= set(data[0])

    def read(self) -> Iterator[Record | Problem]:
        loaded: dict[str, list] = {}
        for name in ("Descriptions.json", "Case_topic.json"):  # one broken file spares the other
            if why := self.outside(name):
                yield Problem(name, why)
                loaded[name] = []
                continue
            try:
                loaded[name] = json.loads((self.root / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                yield Problem(name, f"unreadable MedPix JSON, left out: {err}")
            if not isinstance(loaded.setdefault(name, []), list):
                yield Problem(name, "not a list of MedPix entries, left out")
                loaded[name] = []
        images = image_files(self.root)
        body_of: dict[str, str] = {}
        for number, desc in enumerate(loaded["Descriptions.json"]):
            try:
                yield from self._image(desc, images, body_of)
            except (KeyError, TypeError, AttributeError) as err:
                yield _malformed("Descriptions.json", number, desc, "image", err)
        topics: set[str] = set()
        for number, case in enumerate(loaded["Case_topic.json"]):
            try:
                yield from self._case(case, body_of, topics)
            except (KeyError, TypeError, AttributeError) as err:
                yield _malformed("Case_topic.json", number, case, "U_id", err)

    def _image(self, desc: dict, images: dict[str, Path], body_of: dict[str, str]):
        name, case = desc["image"], desc["U_id"]
        info = desc.get("Description") or {}
        modality = MODALITY.get(desc.get("Type", ""), "other")
        body = BODY.get(desc.get("Location Category", ""), "other")
        body_of.setdefault(case, f"{body}-{modality}")
        path = images.get(f"{name}.jpg") or images.get(f"{name}.png")
        if path is None:
            yield Problem(name, "image listed in Descriptions.json is missing")
            return
        rel = path.relative_to(self.root).as_posix()
        yield Record(stable_id("medpix", rel), "image", modality=modality, body_part=body,
                     domain=f"{body}-{modality}", lang="en", text=(info.get("Caption") or "").strip(),
                     image=rel, study=f"medpix:{case}", source="medpix", license=LICENSE,
                     meta={"split_group": case, "plane": info.get("Plane") or "",
                           "acquisition": info.get("Modality") or "",
                           "location": desc.get("Location") or ""},
                     root=str(self.root))

    def _case(self, case: dict, body_of: dict[str, str], topics: set[str]):
        uid, info, topic = case["U_id"], case.get("Case") or {}, case.get("Topic") or {}
        findings = (info.get("Findings") or "").strip()
        impression = (info.get("Case Diagnosis") or "").strip()
        domain = body_of.get(uid, "other-other")
        body, modality = domain.rsplit("-", 1)
        base = dict(modality=modality, body_part=body, domain=domain, lang="en", source="medpix",
                    license=LICENSE)
        if findings or impression:
            yield Record(stable_id("medpix", uid, "report"), "report",
                         text=report_text(findings, impression, "en"), study=f"medpix:{uid}",
                         meta={"split_group": uid, "sections": sections(findings, impression),
                               "title": info.get("Title") or "",
                               "history": info.get("History") or ""}, **base)
        else:
            yield Problem(f"Case_topic.json:{uid}", "case without findings or diagnosis")
        title = (topic.get("Title") or "").strip()
        discussion = (topic.get("Disease Discussion") or "").strip()
        if title and discussion and title not in topics:
            topics.add(title)
            yield Record(stable_id("medpix", "topic", title), "guideline",
                         text=f"{title}. {discussion}", meta={"title": title,
                         "category": topic.get("Category") or "", "split_group": uid}, **base)
