"""COV-CTR: chest CT slices, each with a Chinese report (findings + impression) and an English
report; the image and both reports are one study, so a hit in one language links the other."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpora.base import CorpusReader, register_reader
from corpora.readers._util import ragged, csv_header, csv_rows, image_files, report_text, sections
from rag.types import Problem, Record, stable_id

COLUMNS = {"image_id", "findings", "impression", "reports_En"}
BASE = dict(modality="ct", body_part="chest", domain="chest-ct", source="cov-ctr",
            license="COV-CTR research use (cite Li et al., 2020)")


def _csv(root: Path) -> Path | None:
    return next((p for p in sorted(root.glob("*.csv")) if COLUMNS <= csv_header(p)), None)


@register_reader("covctr")
class CovCtrReader(CorpusReader):
    priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        return _csv(root) is not None

    def read(self) -> Iterator[Record | Problem]:
        table = _csv(self.root)
        if why := self.outside(table.name):
            yield Problem(table.name, why)
            return
        images = image_files(self.root)
        used: dict[str, int] = {}  # image_id -> line of its first report row
        for line, row in enumerate(csv_rows(table), 2):
            name = (row.get("image_id") or "").strip()
            if not name:
                yield Problem(f"{table.name}:{line}", "row without image_id")
                continue
            study = f"covctr:{name}"
            meta = {"split_group": name.split("%")[0], "covid": row.get("COVID", "")}
            # a few images have two report rows: both reports join the image's study
            key = name if name not in used else f"{name}#{line}"
            if name in used:
                yield Problem(f"{table.name}:{line}", f"duplicate image_id {name} (first on line "
                              f"{used[name]}): kept as a second report of the same study")
            else:
                used[name] = line
                if name in images:
                    yield self._image(images[name], study, meta)
                else:
                    yield Problem(name, "image listed in the report table is missing")
            if why := ragged(row):  # a cut or shifted row: say so, keep what it has
                yield Problem(f"{table.name}:{line}", why)
            findings, impression = row.get("findings") or "", row.get("impression") or ""
            if findings.strip() or impression.strip():
                yield Record(stable_id("cov-ctr", key, "zh"), "report", lang="zh",
                             text=report_text(findings, impression, "zh"), study=study,
                             meta={**meta, "sections": sections(findings, impression),
                                   "terms": row.get("terminologies", "")}, **BASE)
            english = (row.get("reports_En") or "").strip()
            if english:
                yield Record(stable_id("cov-ctr", key, "en"), "report", lang="en",
                             text=english, study=study,
                             meta={**meta, "sections": {"findings": english}}, **BASE)
        for name, path in images.items():
            if name not in used:  # images without a report row still count as cases
                yield self._image(path, f"covctr:{name}", {"split_group": name.split("%")[0]})

    def _image(self, path: Path, study: str, meta: dict) -> Record:
        rel = path.relative_to(self.root).as_posix()
        return Record(stable_id("cov-ctr", rel), "image", image=rel, study=study,
                      meta=dict(meta), root=str(self.root), **BASE)
