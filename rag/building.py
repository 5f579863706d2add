"""Index building: stream a corpus, encode in batches, write the record store, vector indexes
and manifest into a work folder, and swap it into place only when everything is written.

Reading is streamed (a corpus larger than memory can be indexed), and a build over an existing
index of the same corpus and encoder is incremental: only new or changed records are encoded,
and records gone from the corpus are removed. Encoded batches are kept until the build
succeeds, so a crashed build resumes where it was."""
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

from corpora.base import Corpus, CorpusError, open_corpus
from corpora.reading import iter_records, no_records_message, read_records
from corpora.splits import split_records
from indexers.base import VectorIndex, needed_files, open_index
from rag.encoders.base import Encoder, create_encoder
from rag.images import ImageError, load_image
from rag.manifest import IndexLock, recover_swap, swap_paths
from rag.manifest import MANIFEST, missing_files, read_manifest, write_manifest
from rag.registry import replace_dir
from rag.settings import Settings
from rag.store import RecordStore
from rag.types import KINDS, Problem, Record

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (done, total or None when not known yet)


@dataclass
class BuildSummary:
    index: Path
    formats: list[str]
    counts: dict[str, dict[str, int]]
    backends: list[str]
    seconds: float
    problems: list[Problem] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)  # added, updated, removed, unchanged
    incremental: bool = False

    def to_dict(self) -> dict:
        return {"index": str(self.index), "formats": self.formats, "counts": self.counts,
                "backends": self.backends, "seconds": round(self.seconds, 2),
                "incremental": self.incremental, "changes": self.changes,
                "problems": [{"path": p.path, "reason": p.reason} for p in self.problems]}


def record_digest(rec: Record) -> str:
    """What makes a record need encoding again: its fields and its image file's size and time.

    The corpus root is left out: an index is only updated in place for the same root."""
    data = rec.to_dict()
    data.pop("root", None)
    path = rec.image_path()
    stat = path.stat() if path is not None and path.exists() else None
    data["file"] = stat and [stat.st_size, stat.st_mtime_ns]
    payload = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class BatchCache:
    """Encoded batches of an unfinished build, kept on disk across a crash so that running
    the same build again encodes only what is missing (encoding is most of a build's time).

    A batch is keyed by its records' digests under the encoder's fingerprint, so a changed
    record or another encoder is encoded again.
    """

    def __init__(self, folder: Path, fingerprint: str):
        self.root = folder
        self.folder = folder / hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.reused = 0

    def encode(self, encoder: Encoder, batch: Sequence[Record], digests: Sequence[str],
               problems: list[Problem]) -> tuple[list[Record], np.ndarray]:
        key = hashlib.sha256("\1".join(f"{r.id}\0{d}" for r, d in zip(batch, digests)).encode())
        path = self.folder / f"{key.hexdigest()[:32]}.npz"
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
            images.append(load_image(rec.image_path(), frame=rec.meta.get("frame")))
            kept.append(rec)
        except ImageError as err:
            problems.append(Problem(rec.image or rec.id, str(err)))
    if not images:
        return [], np.zeros((0, encoder.dim), dtype=np.float32)
    return kept, encoder.encode_images(images)


def _reusable(index_dir: Path, encoder: Encoder, backends: Sequence[str], root: Path,
              options: dict[str, dict]) -> str:
    """Why the index at index_dir cannot be updated in place ("" when it can)."""
    path = index_dir / MANIFEST
    if not path.exists():
        return "no index yet"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its manifest is unreadable"
    if manifest.get("encoder", {}).get("fingerprint") != encoder.fingerprint:
        return "it was built with another encoder"
    if list(manifest.get("backends", [])) != list(backends):
        return "it has other backends"
    if manifest.get("corpus", {}).get("root") != str(root):
        return "it was built from another corpus folder"
    if manifest.get("store", 1) < 2:
        return "it was built by an older caselens"
    if manifest.get("index_options", {}) != _public(options):
        return "other index options were asked for"
    missing = missing_files(manifest, index_dir, needed_files)
    if missing:
        return f"its files are incomplete ({', '.join(missing)} missing)"
    return ""


def _abandon(work: Path, closables: list) -> None:
    """A failed build or update: close what is open and remove the work folder; the index it
    was to replace is untouched."""
    for closable in closables:
        try:
            if closable is not None:
                closable.close()
        except Exception:  # noqa: BLE001 - already failing; the work folder goes anyway
            pass
    shutil.rmtree(work, ignore_errors=True)


SECRETS = ("api_key",)
TUNING_SAMPLE = 1000  # cross-modal query vectors handed to each backend for ANN tuning


def open_backend(backend: str, path: Path, dim: int, options: dict[str, dict],
                 settings: Settings) -> VectorIndex:
    """A backend of an index with its options (`options[backend]`, as the manifest records
    them) over what the environment sets for it (a Qdrant server's URL and key)."""
    return open_index(backend, path, dim,
                      **{**settings.backend_options(backend), **options.get(backend, {})})


def _public(options: dict[str, dict]) -> dict[str, dict]:
    """Options as the manifest keeps them: without secrets (an API key comes from the
    environment when the index is opened again)."""
    return {name: {k: v for k, v in opts.items() if k not in SECRETS}
            for name, opts in options.items()}


def copy_index_folder(source: Path, target: Path) -> None:
    """Copy an index folder (for an update, or a test's own copy). Qdrant's shard files are
    large and mostly holes: each file's holes stay holes (a plain copy writes every zero, ~20x
    the disk)."""
    shutil.copytree(source, target, copy_function=_copy_sparse)


def _copy_sparse(source: str, target: str) -> None:
    """Copy one file's data regions only (SEEK_DATA / SEEK_HOLE), holes left as holes."""
    if not hasattr(os, "SEEK_DATA"):
        shutil.copy2(source, target)
        return
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                offset = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: nothing but a hole after offset
                break
            end = os.lseek(src.fileno(), offset, os.SEEK_HOLE)
            src.seek(offset)
            dst.seek(offset)
            while offset < end:
                chunk = src.read(min(end - offset, 1 << 24))
                if not chunk:  # the file shrank under us
                    break
                dst.write(chunk)
                offset += len(chunk)
        dst.truncate(size)
    shutil.copystat(source, target)


class _Writer:
    """Applies one build's changes to the store and every vector index, a batch at a time."""

    def __init__(self, store: RecordStore, indexes: list[VectorIndex], encoder: Encoder,
                 cache: BatchCache, problems: list[Problem]):
        self.store, self.indexes, self.encoder = store, indexes, encoder
        self.cache, self.problems = cache, problems
        self.known = store.digests()  # id -> digest of what the index holds now
        # kind -> [(record, digest, replaces an older version)] waiting for a full batch
        self.pending: dict[str, list[tuple[Record, str, bool]]] = {kind: [] for kind in KINDS}
        self.changes = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0}
        self.samples: dict[str, list[np.ndarray]] = {}  # kind -> a few encoded vectors
        self.rng = np.random.default_rng(0)

    def offer(self, rec: Record, batch_size: int) -> None:
        digest = record_digest(rec)
        old = self.known.pop(rec.id, None)  # what is left in `known` at the end is gone
        if old == digest:
            self.changes["unchanged"] += 1
            return
        if old is not None:
            self.remove([rec.id])
        self.pending[rec.kind].append((rec, digest, old is not None))
        if len(self.pending[rec.kind]) >= batch_size:
            self.flush(rec.kind)

    def flush(self, kind: str) -> None:
        batch, self.pending[kind] = self.pending[kind], []
        if not batch:
            return
        kept, vectors = self.cache.encode(self.encoder, [rec for rec, _, _ in batch],
                                          [digest for _, digest, _ in batch], self.problems)
        kept_ids = {rec.id for rec in kept}
        for rec, _, update in batch:
            # an edited record that no longer reads (a corrupted image) is removed, not kept
            name = ("updated" if update else "added") if rec.id in kept_ids else (
                "removed" if update else "")
            if name:
                self.changes[name] += 1
        if not kept:
            return
        digest_of = {rec.id: digest for rec, digest, _ in batch}
        rowids = np.asarray(self.store.add(kept, [digest_of[r.id] for r in kept]), np.int64)
        for index in self.indexes:
            index.add(kind, rowids, vectors)
        # keep each vector with chance TUNING_SAMPLE / records so far: over a build of N
        # records about TUNING_SAMPLE x (1 + ln(N / TUNING_SAMPLE)) are kept (~8k at 1M)
        share = min(1.0, TUNING_SAMPLE / max(1, len(self.store)))
        picked = vectors[self.rng.random(len(vectors)) < share]
        self.samples.setdefault(kind, []).append(picked)

    def tuning_queries(self, kind: str) -> np.ndarray | None:
        """Vectors of the other kinds encoded in this build: the real cross-modal queries a
        kind answers (images for reports, reports for images), for ANN tuning at save()."""
        others = [block for name, blocks in self.samples.items() if name != kind
                  for block in blocks]
        if not others:
            return None
        queries = np.concatenate(others)
        if len(queries) > TUNING_SAMPLE:
            queries = queries[self.rng.choice(len(queries), TUNING_SAMPLE, replace=False)]
        return queries

    def remove(self, ids: Sequence[str]) -> None:
        for kind, rowids in self.store.remove(ids).items():
            for index in self.indexes:
                index.remove(kind, np.asarray(rowids, dtype=np.int64))

    def finish(self) -> None:
        for kind in KINDS:
            self.flush(kind)
        gone = sorted(self.known)
        if gone:
            self.remove(gone)
            self.changes["removed"] += len(gone)


def build_index(corpus_dir: str | Path, index_dir: str | Path, encoder: Encoder,
                encoder_config: str, backends: Sequence[str] = ("faiss", "qdrant"),
                fmt: str | None = None, batch_size: int = 32,
                progress: Progress | None = None, rebuild: bool = False,
                index_options: dict[str, dict] | None = None,
                subset: tuple[str, Callable[[Record], bool]] | None = None,
                follow_symlinks: bool = False, wait: float = 0.0,
                settings: Settings | None = None) -> BuildSummary:
    """Build the index at `index_dir`, or bring an existing one up to date with its corpus.

    The old index stays usable until the new one is complete, and a failed build leaves
    nothing behind: the work happens on a copy that replaces the index only at the end.
    One writer at a time: another build or delete of the same index raises IndexBusy, naming
    it, unless it finishes within `wait` seconds (rag/manifest.py).
    `index_options` maps a backend name to its options (see indexers/), e.g.
    {"faiss": {"index_type": "hnsw"}}; they are kept in the manifest for reopening.
    `subset` (name, keep) indexes only the records `keep` accepts, e.g. ("split=train", ...)
    for evaluation; its name is kept in the manifest.
    `settings` give the backends what the environment sets (a Qdrant server) below the
    options; None: no environment (rag.pipeline.index passes the caller's).
    """
    index_options = {name: dict(opts) for name, opts in (index_options or {}).items()}
    started = time.perf_counter()
    corpus = open_corpus(corpus_dir, fmt, follow_symlinks)  # links out: CorpusReader.outside
    index_dir = Path(index_dir)
    with IndexLock(index_dir, wait):
        recover_swap(index_dir, locked=True)  # before the leftovers below are cleared
        summary = _build(corpus, index_dir, encoder, encoder_config, backends, batch_size,
                         progress, rebuild, index_options, subset, settings or Settings())
    summary.seconds = time.perf_counter() - started
    return summary


def _build(corpus: Corpus, index_dir: Path, encoder: Encoder, encoder_config: str,
           backends: Sequence[str], batch_size: int, progress: Progress | None, rebuild: bool,
           index_options: dict[str, dict],
           subset: tuple[str, Callable[[Record], bool]] | None,
           settings: Settings) -> BuildSummary:
    """build_index's work, done while holding the index's lock."""
    work, _ = swap_paths(index_dir)
    shutil.rmtree(work, ignore_errors=True)  # leftovers of a crashed build
    generation = _generation(index_dir) + 1
    why_not = "--rebuild asked for" if rebuild else _reusable(index_dir, encoder, backends,
                                                              corpus.root, index_options)
    if why_not:
        log.info("building %s from scratch: %s", index_dir, why_not)
        work.mkdir()
    else:
        copy_index_folder(index_dir, work)
        (work / MANIFEST).unlink()  # a copy has a manifest only once complete: recover_swap
    cache = BatchCache(index_dir.parent / f".{index_dir.name}.resume", encoder.fingerprint)
    problems: list[Problem] = []
    store, indexes = None, []
    try:
        store = RecordStore(work / "records.sqlite")
        for name in backends:
            indexes.append(open_backend(name, work, encoder.dim, index_options, settings))
        writer = _Writer(store, indexes, encoder, cache, problems)
        for done, rec in enumerate(iter_records(corpus, problems), 1):
            if subset is None or subset[1](rec):
                writer.offer(rec, batch_size)
            if progress:
                progress(done, None)
        writer.finish()
        if not len(store):
            raise CorpusError(no_records_message(corpus.root, problems))
        counts = store.counts()
        fingerprint = store.fingerprint()
        described = {}
        for index in indexes:
            for kind in KINDS:
                queries = writer.tuning_queries(kind)
                if queries is not None:
                    index.set_tuning_queries(kind, queries)
            index.save()
            described[index.name] = index.describe()
            index.close()
        store.close()
        with open(work / "problems.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"path": p.path, "reason": p.reason},
                                         ensure_ascii=False) + "\n" for p in problems)
        write_manifest(work, {  # last: a work folder with a manifest is complete
            "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint,
                        "config": encoder_config, "dim": encoder.dim},
            "metric": "ip", "backends": list(backends), "counts": counts, "store": 2,
            "index_options": _public(index_options), "indexes": described,
            "corpus": {"root": str(corpus.root), "formats": corpus.formats,
                       "fingerprint": fingerprint},
            "changes": writer.changes, "problems": len(problems), "generation": generation,
            **({"subset": subset[0]} if subset else {})})
    except BaseException:
        _abandon(work, [*indexes, store])
        raise
    replace_dir(work, index_dir)
    cache.clear()
    if cache.reused:
        log.info("resumed an unfinished build: %d encoded batches reused", cache.reused)
    return BuildSummary(index_dir, corpus.formats, counts, list(backends), 0.0, problems,
                        writer.changes, incremental=not why_not)


def _generation(index_dir: Path) -> int:
    """The generation of the index now at index_dir (0: none): each build, update or delete
    writes the next one into its manifest, so a reader can tell that the index changed."""
    try:
        return int(json.loads((index_dir / MANIFEST).read_text(encoding="utf-8"))
                   .get("generation", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def delete_records(index_dir: str | Path, dim: int, ids: Sequence[str] = (),
                   filters: dict[str, str] | None = None, wait: float = 0.0,
                   settings: Settings | None = None) -> int:
    """Remove records from an index by id and/or by filter (e.g. {"source": "cov-ctr"}),
    from the record store and every backend, on a copy swapped in when done. Returns how many
    records went. A later `index` of the corpus adds them back if they are still there.
    Takes the index's lock as a build does (`wait`, `settings` as in build_index)."""
    index_dir = Path(index_dir)
    with IndexLock(index_dir, wait, purpose="changed"):
        recover_swap(index_dir, locked=True)
        return _delete(index_dir, dim, ids, filters, settings or Settings())


def _delete(index_dir: Path, dim: int, ids: Sequence[str],
            filters: dict[str, str] | None, settings: Settings) -> int:
    manifest = read_manifest(index_dir, needed_files)
    work, _ = swap_paths(index_dir)
    shutil.rmtree(work, ignore_errors=True)
    copy_index_folder(index_dir, work)
    (work / MANIFEST).unlink()  # written again last, as a build does
    store, indexes = None, []
    try:
        store = RecordStore(work / "records.sqlite")
        wanted = set(ids)
        if filters:
            for kind in KINDS:
                rows = store.get(store.ids_where(kind, filters))
                wanted |= {rec.id for rec in rows.values()}
        options = manifest.get("index_options", {})
        for name in manifest["backends"]:
            indexes.append(open_backend(name, work, dim, options, settings))
        removed = store.remove(sorted(wanted))
        for kind, rowids in removed.items():
            for index in indexes:
                index.remove(kind, np.asarray(rowids, dtype=np.int64))
        gone = sum(len(rowids) for rowids in removed.values())
        manifest.update(counts=store.counts(), indexes={})
        manifest["corpus"]["fingerprint"] = store.fingerprint()
        for index in indexes:
            index.save()
            manifest["indexes"][index.name] = index.describe()
            index.close()
        store.close()
        manifest.pop("version", None)
        manifest.pop("created", None)
        manifest["generation"] = int(manifest.get("generation", 0)) + 1
        write_manifest(work, manifest)
    except BaseException:
        _abandon(work, [*indexes, store])
        raise
    replace_dir(work, index_dir)
    return gone


def training_index(corpus: Path, encoder: str, work_dir: Path,
                   progress: Progress | None = None) -> Path:
    """An index of the corpus's training split only (reused when already built): what report
    evaluation and MLLM training examples retrieve from, so no test study is among the cases."""
    records, _, _ = read_records(corpus, None)
    splits = split_records(records)
    index_dir = work_dir / f"{corpus.resolve().name}-train-{encoder.replace('/', '_')}"
    build_index(corpus, index_dir, create_encoder(encoder), encoder, ("faiss",),
                progress=progress,
                subset=("split=train", lambda rec: splits.get(rec.id, "train") == "train"))
    return index_dir
