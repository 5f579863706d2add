"""IU X-ray / Open-i as CSV (`indiana_reports.csv` + `indiana_projections.csv`), with the
bilingual rewritten reports `openi-en.json` / `openi-zh.json` (XrayGLM, keyed `<uid>_<k>`)
when present. All of one uid is one study, shared with the XML reader's `openi:CXR<uid>`, so
an English hit links its Chinese version and `ask --lang zh` can quote Chinese text."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import ragged, csv_header, csv_rows, image_files, report_text, sections
from rag.types import Problem, Record, stable_id

REPORTS = "indiana_reports.csv"
COLUMNS = {"uid", "findings", "impression"}
BILINGUAL = {"en": "openi-en.json", "zh": "openi-zh.json"}
BASE = {"modality": "xray", "body_part": "chest", "domain": "chest-xray"}


@register_reader("openi_csv")
class OpenICsvReader(CorpusReader):
    priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        return COLUMNS <= csv_header(root / REPORTS)

    def read(self) -> Iterator[Record | Problem]:
        if why := self.outside(REPORTS):
            yield Problem(REPORTS, why)
            return
        images = image_files(self.root)
        for line, row in enumerate(csv_rows(self.root / REPORTS), 2):
            uid = (row.get("uid") or "").strip()
            findings, impression = row.get("findings") or "", row.get("impression") or ""
            if not uid or not (findings.strip() or impression.strip()):
                yield Problem(f"{REPORTS}:{line}", "row without uid, findings or impression")
                continue
            if why := ragged(row):  # a cut or shifted row: say so, keep it
                yield Problem(f"{REPORTS}:{line}", why)
            yield Record(stable_id("openi", "csv", uid), "report", lang="en",
                         text=report_text(findings, impression, "en"), study=f"openi:CXR{uid}",
                         source="openi", license="Open-i terms of use",
                         meta={"sections": sections(findings, impression), "split_group": uid,
                               "mesh": row.get("MeSH", ""),
                               "indication": row.get("indication", "")}, **BASE)
        for name, path in images.items():
            uid = name.split("_")[0]
            if uid.isdigit():
                rel = path.relative_to(self.root).as_posix()
                yield Record(stable_id("openi", rel), "image", image=rel, study=f"openi:CXR{uid}",
                             source="openi", meta={"split_group": uid}, root=str(self.root),
                             **BASE)
        for lang, file_name in BILINGUAL.items():
            if (self.root / file_name).is_file():
                if why := self.outside(file_name):
                    yield Problem(file_name, why)
                    continue
                yield from self._rewritten(self.root / file_name, lang)

    def _rewritten(self, path: Path, lang: str) -> Iterator[Record | Problem]:
        try:
            items = json.loads(path.read_text(encoding="utf-8"))["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            yield Problem(path.name, f"unreadable bilingual report file: {err}")
            return
        seen: set[tuple[str, str]] = set()
        for item in items:
            key, text = str(item.get("image_id", "")), str(item.get("caption", "")).strip()
            uid = key.split("_")[0]
            if not uid or not text:
                yield Problem(f"{path.name}:{key or '?'}", "entry without image_id or caption")
                continue
            if (uid, text) in seen:  # the same rewritten report repeats per image of a study
                continue
            seen.add((uid, text))
            yield Record(stable_id("openi-xrayglm", lang, key), "report", lang=lang, text=text,
                         study=f"openi:CXR{uid}", source="openi-xrayglm",
                         license="CC BY-NC-SA 4.0 (XrayGLM)",
                         meta={"sections": {"findings": text}, "split_group": uid,
                               "rewritten": True}, **BASE)
