"""COVID-19 image data collection (`metadata.csv` + images): chest X-ray and CT images with the
clinical notes of their source. Patient ids are hashed; date, place, age and sex are left out."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import ragged, csv_header, csv_rows, hashed, image_files
from rag.types import Problem, Record, stable_id

COLUMNS = {"patientid", "filename", "modality", "clinical_notes"}
MODALITY = {"X-ray": "xray", "CT": "ct"}


@register_reader("covid_chestxray")
class CovidChestXrayReader(CorpusReader):
    priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        return COLUMNS <= csv_header(root / "metadata.csv")

    def read(self) -> Iterator[Record | Problem]:
        if why := self.outside("metadata.csv"):
            yield Problem("metadata.csv", why)
            return
        images = image_files(self.root)
        first_line: dict[str, int] = {}
        for line, row in enumerate(csv_rows(self.root / "metadata.csv"), 2):
            name = (row.get("filename") or "").strip()
            if not name:
                yield Problem(f"metadata.csv:{line}", "row without filename")
                continue
            if name in first_line:  # upstream lists two images under a second patient id
                yield Problem(f"metadata.csv:{line}", f"{name} is already listed on line "
                              f"{first_line[name]}: this row is skipped")
                continue
            first_line[name] = line
            if why := ragged(row):  # a cut or shifted row: say so, keep it
                yield Problem(f"metadata.csv:{line}", why)
            modality = MODALITY.get(row.get("modality", ""), "other")
            base = dict(modality=modality, body_part="chest", domain=f"chest-{modality}",
                        source="covid-chestxray", license=(row.get("license") or "").strip(),
                        study=f"covidcxr:{name}")
            meta = {"split_group": "patient:" + hashed(row.get("patientid", "")),
                    "view": row.get("view", ""), "finding": row.get("finding", ""),
                    "doi": row.get("doi", "")}
            path = images.get(name)
            if path is None:
                yield Problem(name, "image listed in metadata.csv is missing")
            else:
                rel = path.relative_to(self.root).as_posix()
                yield Record(stable_id("covid-chestxray", rel), "image", image=rel,
                             meta=dict(meta), root=str(self.root), **base)
            notes = (row.get("clinical_notes") or "").strip()
            if notes:
                yield Record(stable_id("covid-chestxray", name, "notes"), "report",
                             lang="en", text=notes, meta={**meta, "sections":
                                                          {"findings": notes}}, **base)
