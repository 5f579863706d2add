"""The manifest.json written next to every index, the checks that refuse mismatches, and
the lock that lets one writer at a time change an index.

One writer per index, and recovery from a swap that a crash cut in half:

A build or delete writes a copy of the index beside it (`.<name>.building`) and swaps it in
with two renames: the index to `.<name>.old`, the copy to the index's path. Two writers on one
path would share that copy folder and delete each other's work, so every writer first takes
an exclusive `flock` on `.<name>.lock`, a file beside the index (inside it, the swap would
move it away). The OS releases the lock when its process dies, kill -9 included, so a crashed
build never blocks the next one. The file holds who has the lock, for the message a second
writer gets, and is removed when the writer is done (a writer that got the lock on a file
already removed tries again, so two never hold it at once; one killed leaves the file, which
the next writer simply locks). A crash between the two renames leaves no index at the path:
`recover_swap` puts back the complete new copy, or else the old index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no locking
    fcntl = None

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "records.sqlite"
# (backend name, what its index's describe() wrote) -> the files it cannot answer without
NeededFiles = Callable[[str, dict[str, Any]], list[str]]


class ManifestError(RuntimeError):
    """An index that is missing, incomplete or built for another encoder."""


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    data = {"version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path, needed_files: NeededFiles | None = None) -> dict[str, Any]:
    """The index's manifest, after checking that the files it lists are on disk (an index
    missing a piece must fail, not answer with fewer hits): the record store, and with
    `needed_files` each vector index's files (see missing_files). An index that a crash left
    half-swapped is put back first (recover_swap, below)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        _recover(folder)
    if not path.exists():
        raise ManifestError(f"{folder} is not a caselens index (no {MANIFEST}); "
                            f"rebuild it with `python cli.py index <corpus> --index {folder}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestError(f"the manifest {path} is unreadable ({err}); rebuild the index with "
                            f"`python cli.py index <corpus> --index {folder} --rebuild`") from err
    if not isinstance(data, dict):
        raise ManifestError(f"the manifest {path} is not a JSON object; rebuild the index with "
                            f"`python cli.py index <corpus> --index {folder} --rebuild`")
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"index {folder} has format version {data.get('version')}, this "
                            f"caselens reads version {FORMAT_VERSION}: rebuild the index")
    missing = missing_files(data, folder, needed_files)
    if missing:
        raise ManifestError(
            f"index {folder} is incomplete: {', '.join(missing)} missing; rebuild it with "
            f"`python cli.py index <corpus> --index {folder} --rebuild`")
    return data


def _recover(folder: Path) -> None:
    """Repair a swap a crash interrupted, or say why there is no index at `folder`."""
    try:
        recover_swap(folder)
    except IndexBusy:
        pass  # a live writer is swapping: the message below names it
    if folder.exists():
        return
    who = holder(folder)
    if who is not None:
        raise IndexBusy(busy_message(folder, who=who))
    raise ManifestError(f"index not found: {folder} (build it with "
                        f"`python cli.py index <corpus> --index {folder}`)")


def missing_files(manifest: dict[str, Any], folder: Path,
                  needed_files: NeededFiles | None = None) -> list[str]:
    """What the manifest says the index holds but is not on disk, relative to `folder`: the
    record store, and with `needed_files` each backend's files. The caller passes
    indexers.base.needed_files: the backends sit above this module, which cannot import them.
    Stat calls only."""
    wanted = [STORE]
    described = manifest.get("indexes") or {}
    if needed_files is not None:
        for backend in manifest.get("backends", []):
            wanted += needed_files(backend, described.get(backend) or {})
    missing: list[str] = []
    for name in wanted:
        top = name.split("/")[0]
        shown = f"{top}/" if top != name and not (Path(folder) / top).exists() else name
        if shown not in missing and not (Path(folder) / name).exists():
            missing.append(shown)  # a whole folder gone is named once
    return missing


def check_encoder(manifest: dict[str, Any], fingerprint: str, folder: Path) -> None:
    built = manifest["encoder"]["fingerprint"]
    if built != fingerprint:
        raise ManifestError(
            f"index {folder} was built with encoder {built}, but the loaded encoder is "
            f"{fingerprint}: rebuild the index with this encoder, or load the encoder it was "
            f"built with (--encoder {manifest['encoder'].get('config', 'NAME')})")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (weights and models are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


# One writer per index

POLL_S = 0.2  # how often a waiting writer tries the lock again


class IndexBusy(ManifestError):
    """Another process is building or changing this index."""


def swap_paths(index_dir: Path) -> tuple[Path, Path]:
    """The copy a writer builds (`.<name>.building`) and where the replaced index goes during
    the swap (`.<name>.old`, as rag.registry.replace_dir names it)."""
    return (index_dir.parent / f".{index_dir.name}.building",
            index_dir.parent / f".{index_dir.name}.old")


def lock_path(index_dir: Path) -> Path:
    return index_dir.parent / f".{index_dir.name}.lock"


def _pause(seconds: float) -> None:
    time.sleep(seconds)  # a module function so that tests can step a waiting writer


class IndexLock:
    """`with IndexLock(index_dir, wait=60):` the only writer of index_dir until the block
    ends. Raises IndexBusy, naming the holder, when another process still holds the lock
    after `wait` seconds (0: do not wait)."""

    def __init__(self, index_dir: str | Path, wait: float = 0.0, purpose: str = "built"):
        self.index_dir = Path(index_dir)
        self.path = lock_path(self.index_dir)
        self.wait = max(0.0, float(wait))
        self.purpose = purpose
        self.handle = None

    def __enter__(self) -> IndexLock:
        if fcntl is None:  # pragma: no cover
            return self
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        # at least one retry: holder() takes the lock shared for an instant to test it
        deadline = time.monotonic() + max(self.wait, POLL_S)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                if time.monotonic() >= deadline:
                    raise IndexBusy(busy_message(self.index_dir, waited=self.wait)) from None
                _pause(min(POLL_S, max(0.0, deadline - time.monotonic())))
                continue
            if _same_file(handle, self.path):
                break
            handle.close()  # the holder removed this file as we waited on it: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.now(UTC).isoformat(timespec="seconds"),
                                 "purpose": self.purpose}))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            self.path.unlink(missing_ok=True)  # while still held: see the module docstring
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def holder(index_dir: Path) -> dict | None:
    """Who holds the index's lock now ({"pid", "host", "started", "purpose"}), or None when
    nobody does (or locking is not possible here)."""
    path = lock_path(index_dir)
    if fcntl is None or not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(handle.read() or "{}")
                except ValueError:
                    return {}
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def busy_message(index_dir: Path, waited: float = 0.0, who: dict | None = None) -> str:
    who = holder(index_dir) if who is None else who
    by = (f" by pid {who.get('pid', '?')} on {who.get('host', '?')} since "
          f"{who.get('started', '?')}") if who else ""
    after = f" (waited {waited:g} s)" if waited else ""
    return (f"index {index_dir} is being {(who or {}).get('purpose', 'built')}{by}{after}; "
            f"wait for it to finish (--wait SECONDS waits for the lock), or stop that process")


def recover_swap(index_dir: str | Path, locked: bool = False) -> str:
    """Put an index back at its path after a crash between the two renames of a swap: the
    new copy when it is complete (its manifest, written last, is there), else the old index.
    Returns what was done ("" when nothing was needed). Without `locked` it takes the lock
    for the repair, and raises IndexBusy when a live writer holds it (its swap is not over);
    where no lock file can be made (a read-only folder) it repairs nothing."""
    index_dir = Path(index_dir)
    work, old = swap_paths(index_dir)
    if index_dir.exists() or not ((work / MANIFEST).exists() or (old / MANIFEST).exists()):
        return ""
    if not locked:
        try:
            with IndexLock(index_dir, purpose="recovered"):
                return recover_swap(index_dir, locked=True)
        except IndexBusy:
            raise
        except OSError as err:
            log.warning("cannot lock %s to recover it (%s); leaving it as it is", index_dir, err)
            return ""
    if (work / MANIFEST).exists():
        os.replace(work, index_dir)
        shutil.rmtree(old, ignore_errors=True)
        done = f"the finished build in {work.name} moved into place"
    else:
        os.replace(old, index_dir)
        done = f"the previous index in {old.name} moved back"
    log.warning("index %s was missing after an interrupted swap: %s", index_dir, done)
    return done
