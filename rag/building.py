"""Index building: read a corpus, encode in batches, write the record store, vector indexes and
manifest into a work folder, and swap it into place only when everything is written.
Encoded batches are kept until the build succeeds, so a crashed build resumes where it was."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from corpora.base import CorpusError, open_corpus
from indexers.base import open_index
from rag.encoder import Encoder
from rag.images import ImageError, load_image
from rag.manifest import write_manifest
from rag.registry import replace_dir
from rag.store import RecordStore
from rag.types import KINDS, Problem, Record

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class BuildSummary:
    index: Path
    formats: list[str]
    counts: dict[str, dict[str, int]]
    backends: list[str]
    seconds: float
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"index": str(self.index), "formats": self.formats, "counts": self.counts,
                "backends": self.backends, "seconds": round(self.seconds, 2),
                "problems": [{"path": p.path, "reason": p.reason} for p in self.problems]}


def read_records(corpus_dir: Path, fmt: str | None) -> tuple[list[Record], list[Problem], list[str]]:
    corpus = open_corpus(corpus_dir, fmt)
    records: list[Record] = []
    problems: list[Problem] = []
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
            records.append(item)
    if not records:
        raise CorpusError(f"no usable records in {corpus_dir} ({len(problems)} problem(s); "
                          "run `python cli.py index` with --json to see them)")
    return records, problems, corpus.formats


class BatchCache:
    """Encoded batches of an unfinished build, kept on disk across a crash so that running
    the same build again encodes only what is missing (encoding is most of a build's time).

    A batch is keyed by its records' ids, texts and image files (size, mtime) under the
    encoder's fingerprint, so a changed record or another encoder is encoded again.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.root = folder
        self.folder = folder / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def _path(self, batch: Sequence[Record]) -> Path:
        digest = hashlib.sha256()
        for rec in batch:
            path = rec.image_path()
            stat = path.stat() if path is not None and path.exists() else None
            digest.update(f"{rec.id}\0{rec.text}\0{stat and (stat.st_size, stat.st_mtime_ns)}"
                          "\1".encode())
        return self.folder / f"{digest.hexdigest()[:32]}.npz"

    def encode(self, encoder: Encoder, batch: Sequence[Record],
               problems: list[Problem]) -> tuple[list[Record], np.ndarray]:
        path = self._path(batch)
        if path.exists():
            data = np.load(path, allow_pickle=False)
            kept_ids = set(data["kept"].tolist())
            problems += [Problem(*json.loads(p)) for p in data["problems"].tolist()]
            self.reused += 1
            return [r for r in batch if r.id in kept_ids], data["vectors"]
        new_problems: list[Problem] = []
        kept, vectors = _encode_batch(encoder, batch, new_problems)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, kept=np.asarray([r.id for r in kept], dtype=str), vectors=vectors,
                 problems=np.asarray([json.dumps([p.path, p.reason]) for p in new_problems],
                                     dtype=str))
        os.replace(tmp, path)
        problems += new_problems
        return kept, vectors

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _encode_batch(encoder: Encoder, batch: Sequence[Record],
                  problems: list[Problem]) -> tuple[list[Record], np.ndarray]:
    if batch[0].kind != "image":
        return list(batch), encoder.encode_texts([r.text for r in batch])
    kept, images = [], []
    for rec in batch:
        try:
            images.append(load_image(rec.image_path()))
            kept.append(rec)
        except ImageError as err:
            problems.append(Problem(rec.image or rec.id, str(err)))
    return kept, encoder.encode_images(images)


def corpus_fingerprint(records: Sequence[Record]) -> str:
    digest = hashlib.sha256()
    for rec in sorted(records, key=lambda r: r.id):
        digest.update(f"{rec.id}\x00{rec.text}\x00{rec.image or ''}\x01".encode())
    return digest.hexdigest()


def build_index(corpus_dir: str | Path, index_dir: str | Path, encoder: Encoder,
                encoder_config: str, backends: Sequence[str] = ("faiss", "qdrant"),
                fmt: str | None = None, batch_size: int = 32,
                progress: Progress | None = None) -> BuildSummary:
    """Build (or rebuild) the index at `index_dir`; the old index stays usable until the
    new one is complete, and a failed build leaves nothing behind."""
    started = time.perf_counter()
    records, problems, formats = read_records(Path(corpus_dir), fmt)
    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    work = index_dir.parent / f".{index_dir.name}.building"
    shutil.rmtree(work, ignore_errors=True)  # leftovers of a crashed build
    work.mkdir()
    cache = BatchCache(index_dir.parent / f".{index_dir.name}.resume", encoder.fingerprint)
    store, indexes = None, []
    try:
        store = RecordStore(work / "records.sqlite")
        for name in backends:
            indexes.append(open_index(name, work, encoder.dim))
        done = 0
        for kind in KINDS:
            of_kind = [r for r in records if r.kind == kind]
            for start in range(0, len(of_kind), batch_size):
                batch = of_kind[start:start + batch_size]
                kept, vectors = cache.encode(encoder, batch, problems)
                if kept:
                    rowids = np.asarray(store.add(kept), dtype=np.int64)
                    for index in indexes:
                        index.add(kind, rowids, vectors)
                done += len(batch)
                if progress:
                    progress(done, len(records))
        counts = store.counts()
        for index in indexes:
            index.save()
            index.close()
        store.close()
        write_manifest(work, {
            "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint,
                        "config": encoder_config, "dim": encoder.dim},
            "metric": "ip", "backends": list(backends), "counts": counts,
            "corpus": {"root": str(Path(corpus_dir).resolve()), "formats": formats,
                       "fingerprint": corpus_fingerprint(records)},
            "problems": len(problems)})
        with open(work / "problems.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"path": p.path, "reason": p.reason}) + "\n" for p in problems)
    except BaseException:
        for closable in [*indexes, store]:
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # noqa: BLE001 - already failing; the work folder goes anyway
                pass
        shutil.rmtree(work, ignore_errors=True)
        raise
    replace_dir(work, index_dir)
    cache.clear()
    if cache.reused:
        log.info("resumed an unfinished build: %d encoded batches reused", cache.reused)
    return BuildSummary(index_dir, formats, counts, list(backends),
                        time.perf_counter() - started, problems)

