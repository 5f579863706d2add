"""One writer per index, and recovery from a swap that a crash cut in half.

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

import json
import logging
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from rag.manifest import MANIFEST, ManifestError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no locking
    fcntl = None

log = logging.getLogger(__name__)

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
