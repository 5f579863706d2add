"""Reading a corpus's usable records: the checks every reader of a corpus shares (index
building, training, evaluation, `corpus inspect`)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpora.base import Corpus, CorpusError, open_corpus
from rag.types import Problem, Record


def iter_records(corpus: Corpus, problems: list[Problem]) -> Iterator[Record]:
    """The corpus's usable records, one at a time; duplicates and empty texts become Problems.

    Only the ids seen so far are held in memory, never the records themselves.
    """
    seen: set[str] = set()
    for item in corpus.read():
        if isinstance(item, Problem):
            problems.append(item)
        elif item.id in seen:
            problems.append(Problem(item.image or item.id, f"duplicate record id {item.id}"))
        elif item.kind != "image" and not item.text.strip():
            problems.append(Problem(item.id, "empty text"))
        else:
            seen.add(item.id)
            yield item


def read_records(corpus_dir: Path, fmt: str | None) -> tuple[list[Record], list[Problem], list[str]]:
    """Every usable record in memory, for training (which needs all pairs at once)."""
    corpus = open_corpus(corpus_dir, fmt)
    problems: list[Problem] = []
    records = list(iter_records(corpus, problems))
    if not records:
        raise CorpusError(no_records_message(corpus_dir, problems))
    return records, problems, corpus.formats


def no_records_message(corpus_dir: Path | str, problems: list[Problem]) -> str:
    return (f"no usable records in {corpus_dir} ({len(problems)} problem(s); "
            "run `python cli.py corpus inspect` on it to see them)")
