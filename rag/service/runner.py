"""The HTTP API's settings, its one worker thread and the index session it owns.

Encoding, search, generation and record reads run on this thread, never on the event loop:
the loop stays free to answer /healthz, to refuse requests over the limits and to notice
clients that left. One thread does all the work, in arrival order, because the encoder,
SQLite and the embedded Qdrant store are not made for concurrent use; at most `max_waiting`
jobs wait behind the running one, and a request beyond that is told at once to come back
(503 with Retry-After) instead of piling up. A job whose client disconnected while it waited
is dropped before it starts. Before each job the worker stats the index manifest and opens
the index again when a build has swapped in a new one, so `serve` follows `python cli.py
index` without a restart.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rag import pipeline
from rag.manifest import MANIFEST, read_manifest

log = logging.getLogger("caselens.api")
T = TypeVar("T")
Receive = Callable[[], Awaitable[dict]]


@dataclass
class Settings:
    """What one server serves and its limits (built by `cli.py serve`, or by a test)."""

    index: Path = pipeline.DEFAULT_INDEX
    backend: str | None = None  # default: the index's first backend
    api_key: str | None = None  # when set, /v1 requires the X-API-Key header
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_waiting: int = 16  # requests queued behind the one being served
    max_text_chars: int = 2000  # a search text or question, in characters...
    max_text_words: int = 1000  # ...and in words (a Chinese character counts as one)
    threads: int | None = None  # torch threads of the worker (None: torch's; serve uses 1)
    thumbnail_px: int = 256
    generator: str = "auto"  # who writes /v1/ask's reports (loaded once at start)
    generator_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"model_path": ...}


class ApiError(Exception):
    """An answer other than 200: the status, one sentence for the client, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Worker:
    """One thread that runs jobs one at a time, with at most `max_waiting` queued behind the
    running one. `pending`, `dropped` and `done` are counted on the event loop's thread;
    `changed` is notified whenever they move (tests wait on it instead of sleeping)."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.pending = 0  # running + waiting
        self.dropped = 0  # jobs never started because their client left
        self.done = 0
        self.changed = threading.Condition()
        self._seconds = 0.05  # moving average of a job's time, for Retry-After
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="caselens-worker")

    def full(self) -> bool:
        return self.pending > self.max_waiting

    def busy_error(self) -> ApiError:
        wait = max(1, math.ceil(self.pending * self._seconds))
        return ApiError(503, f"the server is busy ({self.pending} requests ahead): retry in "
                             f"{wait} s", {"Retry-After": str(wait)})

    async def run(self, job: Callable[[], T], receive: Receive | None = None) -> T:
        """job() on the worker thread. Raises 503 when the queue is full, and 499 (client
        closed the request) when `receive` reports a disconnect before the job started."""
        if self.full():
            raise self.busy_error()
        self._count("pending", +1)
        future = self._executor.submit(self._timed, job)
        result = asyncio.wrap_future(future)
        try:
            if receive is not None:
                watch = asyncio.ensure_future(_disconnected(receive))
                try:
                    await asyncio.wait({watch, result}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watch.cancel()
                if not result.done() and future.cancel():  # the client left, the job had not started
                    self._count("dropped", +1)
                    raise ApiError(499, "the client closed the request before it was served")
            return await result
        finally:
            self._count("pending", -1)
            self._count("done", +1)

    def _timed(self, job: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return job()
        finally:
            self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - started)

    async def call(self, job: Callable[[], T]) -> T:
        """job() on the worker thread outside the queue's count (start and shutdown)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def wait_for(self, predicate: Callable[[Worker], bool], timeout: float = 30.0) -> bool:
        """Block until predicate(self) holds (for tests and benchmarks, from another thread)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _count(self, name: str, step: int) -> None:
        with self.changed:
            setattr(self, name, getattr(self, name) + step)
            self.changed.notify_all()


async def _disconnected(receive: Receive) -> None:
    """Returns when the ASGI server reports that the client went away (the request body has
    been read by then, so nothing else is waiting for these messages)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def manifest_stamp(index_dir: Path) -> tuple[int, ...] | None:
    """What identifies one build of an index: a build swaps in a new folder and manifest."""
    try:
        found = os.stat(Path(index_dir) / MANIFEST)
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size


class Service:
    """The index session, opened, used and reopened only on the worker thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.worker = Worker(settings.max_waiting)
        self.session: pipeline.Session | None = None
        self.error: str | None = "the index is still loading"
        self.stamp: tuple[int, ...] | None = None  # the build the session was opened from
        self._failed: tuple[int, ...] | None = None  # a build that did not open: not retried
        self.reloads = 0

    async def run(self, call: Callable[[pipeline.Session], T], receive: Receive | None = None) -> T:
        """call(session) on the worker thread, after picking up a new build of the index."""
        return await self.worker.run(lambda: self._with_session(call), receive)

    def _with_session(self, call: Callable[[pipeline.Session], T]) -> T:
        self.refresh()
        if self.session is None:
            raise ApiError(503, f"index not ready: {self.error}")
        return call(self.session)

    def stale(self) -> bool:
        """Whether the index on disk is another build than the one loaded (a stat, no I/O
        beyond it: cheap enough for the event loop)."""
        stamp = manifest_stamp(self.settings.index)
        return stamp is not None and stamp not in (self.stamp, self._failed)

    def refresh(self, force: bool = False) -> bool:
        """Open the index again when its manifest changed (or when forced); True if it did.
        A build that fails to open keeps the previous session serving; only a forced reload
        reports the failure."""
        if not force and not self.stale():
            return False
        try:
            self.open()
        except pipeline.USER_ERRORS as err:
            if force:
                kept = "; still serving the index loaded before" if self.session else ""
                raise ApiError(503, f"could not reload the index: {err}{kept}") from err
            return False
        return True

    def open(self) -> None:
        settings = self.settings
        _limit_threads(settings.threads)
        stamp = manifest_stamp(settings.index)  # before reading: a later swap is seen next time
        old = self.session
        try:
            encoder = old.encoder if old is not None and _same_encoder(old, settings.index) else None
            fresh = pipeline.open_session(
                settings.index, backend=settings.backend, encoder_obj=encoder,
                generator=settings.generator, generator_options=settings.generator_options)
        except pipeline.USER_ERRORS as err:
            self._failed = stamp
            if old is None:
                self.error = str(err)
            log.error("index %s not loaded: %s", settings.index, err)
            raise
        self.session, self.stamp, self._failed, self.error = fresh, stamp, None, None
        if old is not None:
            old.close()
            self.reloads += 1
            log.info("reloaded index %s (a new build)", settings.index)
        else:
            log.info("serving index %s", settings.index)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


def _limit_threads(threads: int | None) -> None:
    """Torch threads of the calling (worker) thread. One is the default: a query is too small
    to gain from more, and on a busy machine a second OpenMP thread waiting at every barrier
    made a text query 3-7x slower (p50 41-113 ms against 15-19 ms, p95 up to 2.6 s, 2 cores
    at load 10) and fought the event loop for the cores."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def _same_encoder(session: pipeline.Session, index_dir: Path) -> bool:
    """A rebuilt index made with the same encoder reuses the loaded one (seconds saved)."""
    return read_manifest(index_dir)["encoder"] == session.manifest["encoder"]
