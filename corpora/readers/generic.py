"""The layout for your own data.

Either (a) a `manifest.jsonl` in the corpus root, one JSON object per line:

    {"image": "img/0001.png", "text": "Findings: ...", "lang": "en", "study": "0001",
     "modality": "xray", "body_part": "chest", "domain": "chest-xray", "license": "..."}

`image` is relative to the root; a line with an image and a text gives an image record and a
report record of one study; a line with only a text gives a report (or `"kind": "guideline"`).
A text without "lang" is tagged with the language it is mostly written in (en or zh).
Or (b) image files (PNG, JPEG, DICOM...) anywhere under the root, each with an optional
sidecar `<name>.txt` (its report) or `<name>.json` (an object with "text" and the same optional
fields as a manifest line).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from rag.images import DICOM_SUFFIXES, is_image_file
from corpora.readers._util import hashed
from rag.text.words import main_language
from rag.types import KINDS, Problem, Record, stable_id

FIELDS = ("modality", "body_part", "domain", "lang", "license")
MANIFEST = "manifest.jsonl"
SCALARS = (str, int, float)  # a field may be a number ("study": 12) but never a list or object


def invalid(item: dict) -> str:
    """Why a manifest line or sidecar object cannot be read ("" when it can): wrong types are
    told field by field, so that one bad line is a listed problem, not a failed build."""
    for name in ("image", "text", "report"):
        value = item.get(name)
        if value is not None and not isinstance(value, str):
            return f"\"{name}\" must be a string, not {json.dumps(value)[:40]}"
    if item.get("meta") is not None and not isinstance(item["meta"], dict):
        return f"\"meta\" must be an object {{...}}, not {json.dumps(item['meta'])[:40]}"
    for name in (*FIELDS, "study", "id", "kind", "patient_group"):
        value = item.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, SCALARS)):
            return f"\"{name}\" must be a string, not {json.dumps(value)[:40]}"
    return ""


def _first_object(path: Path) -> dict | None:
    try:
        with open(path, "rb") as handle:  # bytes: a bad byte further down is not this line's
            for line in handle:
                if line.strip():
                    item = json.loads(line.decode("utf-8-sig"))
                    return item if isinstance(item, dict) else None
    except (OSError, ValueError):
        return None
    return None


def _named(image: str) -> str:
    """What an image's ids and default study are made from: its path, or for a DICOM file a
    hash of it (PACS exports name files after patients; the dicom reader does the same)."""
    return hashed(f"path:{image}") if Path(image).suffix.lower() in DICOM_SUFFIXES else image


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


@register_reader("generic")
class GenericReader(CorpusReader):
    priority = 90  # the most general layout is tried last

    @classmethod
    def detect(cls, root: Path) -> bool:
        first = _first_object(root / MANIFEST) if (root / MANIFEST).is_file() else None
        if first is not None and ("image" in first or "text" in first):
            return True
        return any(p.with_suffix(".txt").is_file() or p.with_suffix(".json").is_file()
                   for p in _images(root)[:200])

    def read(self) -> Iterator[Record | Problem]:
        self._texts: dict[str, str] = {}  # text record id -> where it was first read
        if (self.root / MANIFEST).is_file():
            if why := self.outside(MANIFEST):
                yield Problem(MANIFEST, why)
                return
            yield from self._manifest()
        else:
            yield from self._sidecars()

    def _record(self, item: dict, key: str, study: str) -> Iterator[Record | Problem]:
        fields = {f: str(item[f]) for f in FIELDS if item.get(f)}
        fields.setdefault("domain", "-".join(
            v for v in (item.get("body_part"), item.get("modality")) if v))
        image, text = item.get("image"), str(item.get("text") or item.get("report") or "").strip()
        base = dict(study=study, source="generic", meta=dict(item.get("meta") or {}), **fields)
        base["meta"].setdefault("split_group", str(item.get("patient_group") or study))
        if image and (why := self.outside(image)):
            yield Problem(key, f"image {image!r} is {why}")
            image = None
        elif image:
            if not (self.root / image).is_file():
                yield Problem(str(image), "image listed in the corpus is missing")
            else:
                yield Record(stable_id("generic", _named(image)), "image", image=str(image),
                             root=str(self.root), **{**base, "lang": ""})
        if text:
            kind = item.get("kind") if item.get("kind") in KINDS[1:] else "report"
            # an id that survives edits elsewhere in the manifest (a line number would not),
            # so that re-indexing a grown corpus finds the records it already has
            own = _named(image) if image else hashed(
                f"{item.get('study') or ''}\0{fields.get('lang', '')}\0{kind}\0{text}")
            record_id = str(item.get("id") or stable_id("generic", own, "text"))
            if record_id in self._texts:
                yield Problem(key, f"duplicate id {record_id} (first on {self._texts[record_id]}):"
                              " this text is left out")
                return
            self._texts[record_id] = key
            yield Record(record_id, kind, text=text,
                         **{**base, "lang": fields.get("lang") or main_language(text)})

    def _manifest(self) -> Iterator[Record | Problem]:
        with open(self.root / MANIFEST, "rb") as handle:  # decoded a line at a time
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{MANIFEST}:{number}"
                try:
                    item = json.loads(line.decode("utf-8-sig"))
                except UnicodeDecodeError as err:
                    yield Problem(where, f"not UTF-8 text: {err}")
                    continue
                except ValueError as err:
                    yield Problem(where, f"not valid JSON: {err}")
                    continue
                if not isinstance(item, dict):
                    yield Problem(where, "a line must be a JSON object {...}, not a "
                                         f"{type(item).__name__}")
                    continue
                if why := invalid(item):
                    yield Problem(where, why)
                    continue
                if not (item.get("image") or item.get("text")):
                    yield Problem(where, "a line needs an \"image\" or a \"text\"")
                    continue
                yield from self._record(item, where, str(item.get("study") or where))

    def _sidecars(self) -> Iterator[Record | Problem]:
        for path in _images(self.root):
            rel = path.relative_to(self.root).as_posix()
            item: dict = {"image": rel}
            txt, side = path.with_suffix(".txt"), path.with_suffix(".json")
            bad = side if side.is_file() else txt
            try:
                if (side.is_file() or txt.is_file()) and (why := self.outside(
                        bad.relative_to(self.root))):
                    raise ValueError(why)
                if side.is_file():
                    data = json.loads(side.read_text(encoding="utf-8"))
                    if not isinstance(data, dict):
                        raise ValueError("sidecar JSON must be an object")
                    if why := invalid(data):
                        raise ValueError(why)
                    item.update({k: v for k, v in data.items() if k != "image"})
                elif txt.is_file():
                    item["text"] = txt.read_text(encoding="utf-8")
            except (OSError, ValueError) as err:
                yield Problem(bad.relative_to(self.root).as_posix(), f"unreadable sidecar: {err}")
            yield from self._record(item, rel, str(item.get("study") or _named(rel)))
