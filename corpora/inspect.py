"""`corpus inspect`: what `index` would read from a folder, without encoding anything."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from corpora.base import open_corpus
from corpora.reading import iter_records
from rag.images import ImageError, check_image
from rag.types import Problem


def inspect_corpus(corpus: str | Path, fmt: str | None = None,
                   follow_symlinks: bool = False) -> dict[str, Any]:
    """What `index` would read, without encoding: formats, counts by kind / modality / domain /
    language, every file that cannot be used (with the reason), and the reading speed."""
    started = time.perf_counter()
    found = open_corpus(corpus, fmt, follow_symlinks)
    counts: dict[str, Counter] = {name: Counter() for name in ("kind", "modality", "domain", "lang")}
    by_kind: dict[str, Counter] = {}
    problems: list[Problem] = []
    records = 0
    for item in iter_records(found, problems):  # the same checks as `index`
        if item.kind == "image":
            try:
                check_image(item.image_path())
            except ImageError as err:
                problems.append(Problem(item.image or item.id, str(err)))
                continue
        records += 1
        for name, counter in counts.items():
            counter[getattr(item, name) or "-"] += 1
        by_kind.setdefault(item.kind, Counter())[f"{item.domain or '-'}/{item.lang or '-'}"] += 1
    seconds = time.perf_counter() - started
    return {"root": str(found.root), "formats": found.formats, "records": records,
            "seconds": round(seconds, 2), "records_per_s": round(records / max(seconds, 1e-9), 1),
            "counts": {name: dict(counter) for name, counter in counts.items()},
            "by_kind": {kind: dict(counter) for kind, counter in by_kind.items()},
            "problems": [{"path": p.path, "reason": p.reason} for p in problems]}
