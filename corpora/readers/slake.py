"""SLAKE visual question answering (`train.json`, `validate.json`, `test.json`): English and
Chinese questions with their answers about CT, MR and X-ray images (`imgs/xmlab<N>/source.jpg`).

Each question-answer pair is a `qa` record: knowledge about an image that is neither a report
nor a guideline, so the report composer never quotes "What modality is this? CT" as a finding.
The image, when its file is present, is an image record of the same study.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from rag.types import Problem, Record, stable_id

SPLITS = ("train", "validate", "test")
FIELDS = {"img_name", "question", "answer", "q_lang"}
MODALITIES = {"ct": "ct", "mri": "mr", "x-ray": "xray"}
BODY = {"lung": "chest", "chest_lung": "chest", "chest_heart": "chest",
        "chest_mediastinal": "chest", "abdomen": "abdomen", "brain": "head",
        "brain_tissue": "head", "brain_face": "head", "neck": "neck", "pelvic cavity": "pelvis"}
LICENSE = "SLAKE research use (cite Liu et al., 2021)"
LABELS = {"en": ("Question: ", " Answer: "), "zh": ("问题：", " 答案：")}


def _head(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(2000)
    except (OSError, UnicodeDecodeError):
        return ""


def _files(root: Path) -> list[Path]:
    return [root / f"{split}.json" for split in SPLITS if (root / f"{split}.json").is_file()]


@register_reader("slake")
class SlakeReader(CorpusReader):
    priority = 25

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(all(f'"{name}"' in _head(p) for name in FIELDS) for p in _files(root))

    def read(self) -> Iterator[Record | Problem]:
        images = self._image_folder()
        seen_images: set[str] = set()
        missing = 0
        for path in _files(self.root):
            split = path.stem
            if why := self.outside(path.relative_to(self.root)):
                yield Problem(path.name, why)
                continue
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                yield Problem(path.name, f"unreadable SLAKE JSON: {err}")
                continue
            if not isinstance(rows, list):
                yield Problem(path.name, "not a list of questions")
                continue
            for number, row in enumerate(rows):
                if not isinstance(row, dict) or not FIELDS <= row.keys():
                    yield Problem(f"{path.name}#{number}", f"question without {sorted(FIELDS)}")
                    continue
                name = str(row["img_name"])
                base = self._base(row, split)
                if name not in seen_images:
                    seen_images.add(name)
                    found = images / name if images else None
                    if found is not None and found.is_file():
                        yield Record(stable_id("slake", "img", name), "image",
                                     image=found.relative_to(self.root).as_posix(),
                                     root=str(self.root), **base)
                    else:
                        missing += 1
                yield self._question(row, split, number, base)
        if missing:
            where = f"under {images.relative_to(self.root)}/" if images else "(no imgs/ folder)"
            yield Problem("imgs/", f"{missing} image(s) named by the questions are not present "
                          f"{where}: their questions are indexed as text only")

    def _image_folder(self) -> Path | None:
        for name in ("imgs", "images", "Images"):
            if (self.root / name).is_dir():
                return self.root / name
        return None

    @staticmethod
    def _base(row: dict, split: str) -> dict:
        modality = MODALITIES.get(str(row.get("modality", "")).lower(), "other")
        location = str(row.get("location", ""))
        body = BODY.get(location.lower(), location.lower().replace(" ", "-") or "unknown")
        folder = str(row["img_name"]).split("/")[0]
        return dict(modality=modality, body_part=body, domain=f"{body}-{modality}",
                    study=f"slake:{folder}", source="slake", license=LICENSE,
                    meta={"split": split, "split_group": folder, "location": location})

    @staticmethod
    def _question(row: dict, split: str, number: int, base: dict) -> Record:
        lang = "zh" if row.get("q_lang") == "zh" else "en"
        question, answer = str(row["question"]).strip(), str(row["answer"]).strip()
        ask, say = LABELS[lang]
        meta = {**base["meta"], "question": question, "answer": answer,
                "answer_type": row.get("answer_type", ""),
                "content_type": row.get("content_type", "")}
        qid = str(row.get("qid", number))
        return Record(stable_id("slake", split, qid), "qa", lang=lang,
                      text=f"{ask}{question}{say}{answer}", **{**base, "meta": meta})
