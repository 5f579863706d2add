"""The train / validation / test split of a corpus: by patient or case group, never by image,
so no patient's images are on both sides. Deterministic from the group name alone (a hash),
so every stage (encoder training, MLLM examples, evaluation, benches) agrees on it."""
from __future__ import annotations

import hashlib

from rag.types import Record

VAL_FRACTION = 0.1
TEST_FRACTION = 0.15


def split_of(group: str, val_fraction: float = VAL_FRACTION,
             test_fraction: float = TEST_FRACTION) -> str:
    """"train", "val" or "test" for a split group (see group_of)."""
    bucket = int(hashlib.sha1(group.encode("utf-8")).hexdigest()[:8], 16) % 1000 / 1000
    if bucket < test_fraction:
        return "test"
    return "val" if bucket < test_fraction + val_fraction else "train"


def group_of(rec: Record) -> str:
    """The unit of the train / val / test split of a record: its patient or case group."""
    return f"{rec.source}:{rec.meta.get('split_group') or rec.study}"


def split_records(records: list[Record]) -> dict[str, str]:
    """Record id -> train / val / test, with the default fractions."""
    return {rec.id: split_of(group_of(rec)) for rec in records}
