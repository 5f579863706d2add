"""A model in a child process, so that a native crash kills the child and not the caller.

llama.cpp and torch run native code: a segfault (llama.cpp's AMX path, upstream #20824), an
abort() or the kernel's OOM killer would take the whole `ask`, `serve` or `eval report` process
down with them. A `ModelWorker` builds the model object in `python -m generator.worker` and
runs its methods there; when the child dies the caller gets `GeneratorCrashed` (one sentence)
and the next call starts a fresh child.

The child is a plain subprocess, not multiprocessing's 'spawn', which would re-import the
caller's `__main__` (cli.py, pytest...) in the child. Messages are pickled over two pipes:
("start", factory, options, warm) then (method, args, kwargs) per call; each gets ("ok",
result) or ("error", exception). One request at a time: callers queue on a lock for at most
`wait` seconds, then get a TimeoutError.
"""
from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from generator.base import GeneratorCrashed

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
_GRACE_S = 10.0  # how long a child that closed its pipe gets to finish dying


def resolve(dotted: str) -> Any:
    """`package.module:attribute` -> the attribute (how the child finds the model's factory)."""
    module, _, name = dotted.partition(":")
    if not name:
        raise ValueError(f"a factory is named `package.module:callable`, not {dotted!r}")
    return getattr(importlib.import_module(module), name)


def death_cause(returncode: int | None) -> str:
    """How a child ended, in words: "signal SIGSEGV", "exit code 3"."""
    if returncode is None:
        return "the worker stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if name == "SIGKILL":
            return "signal SIGKILL (killed, most often for lack of memory)"
        return f"signal {name}"
    return f"exit code {returncode}"


class ModelWorker:
    """`factory(**options)` built and called in a child process, one request at a time."""

    def __init__(self, factory: str, options: dict[str, Any] | None = None,
                 warm: str | None = None, wait: float | None = 600.0):
        self.factory = factory
        self.options = dict(options or {})
        self.warm = warm  # a method the child runs once after building (e.g. load the model)
        self.wait = wait
        self.started_seconds: float | None = None  # spawn + build + warm, of the live child
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._inbox: Connection | None = None
        self._outbox: Connection | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child and build the object, unless a live child already holds it."""
        with self._queued():
            self._start()

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """`object.method(*args, **kwargs)` in the child. Raises the method's own exception,
        or GeneratorCrashed when the child dies (or gives no answer within `timeout` s)."""
        with self._queued():
            self._start()
            return self._exchange((method, args, kwargs), timeout)

    def close(self) -> None:
        """Stop the child (asked first, then killed); a later call starts a new one."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            self._outbox.send(None)
        except OSError:
            pass  # already gone
        self._close_pipes()
        try:
            proc.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @contextmanager
    def _queued(self):
        """The lock, waited for at most `wait` seconds: one request in the child at a time."""
        if not self._lock.acquire(timeout=-1 if self.wait is None else self.wait):
            raise TimeoutError(f"the model worker was busy with other requests for {self.wait:g} s:"
                               " try again later")
        try:
            yield
        finally:
            self._lock.release()

    def _start(self) -> None:
        if self.alive:
            return
        if self._proc is not None:  # died while idle: collect it before starting anew
            self._reap()
        started = time.perf_counter()
        parent_in, child_out = os.pipe()
        child_in, parent_out = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        level = logging.getLogger().getEffectiveLevel()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "generator.worker", str(child_in), str(child_out), str(level)],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._inbox = Connection(parent_in, writable=False)
        self._outbox = Connection(parent_out, readable=False)
        try:
            self._exchange(("start", self.factory, self.options, self.warm), None)
        except GeneratorCrashed:
            raise
        except BaseException:
            self.close()  # the child could not build the object: nothing to keep
            raise
        self.started_seconds = time.perf_counter() - started
        log.info("model worker %d (%s) ready in %.1f s", self._proc.pid, self.factory,
                 self.started_seconds)

    def _exchange(self, message: tuple, timeout: float | None) -> Any:
        try:
            self._outbox.send(message)
            if not self._inbox.poll(timeout):
                self._proc.kill()
                self._reap()
                raise GeneratorCrashed(f"no answer within {timeout:g} s")
            status, value = self._inbox.recv()
        except (EOFError, OSError):
            raise GeneratorCrashed(self._reap()) from None
        if status == "error":
            raise value
        return value

    def _reap(self) -> str:
        """Collect a dead (or dying) child; the cause of its death, in words."""
        proc, self._proc = self._proc, None
        self._close_pipes()
        try:
            code = proc.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on: not usable
            proc.kill()
            proc.wait()
            code = None
        cause = death_cause(code)
        log.warning("model worker %d (%s) died: %s", proc.pid, self.factory, cause)
        return cause

    def _close_pipes(self) -> None:
        for conn in (self._inbox, self._outbox):
            if conn is not None:
                conn.close()
        self._inbox = self._outbox = None

    def __del__(self):
        if getattr(self, "_proc", None) is not None and self._proc.poll() is None:
            self._proc.kill()


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling as the same type, else a RuntimeError
    that keeps its type name and message."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any pickling failure means: send a plain copy
        pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def serve(inbox: Connection, outbox: Connection) -> None:
    """The child's loop: build the object on "start", then run one method per message."""
    target = None
    while True:
        try:
            message = inbox.recv()
        except EOFError:
            return  # the parent is gone
        if message is None:
            return
        try:
            if message[0] == "start":
                _, factory, options, warm = message
                target = resolve(factory)(**options)
                if warm:
                    getattr(target, warm)()
                reply = ("ok", None)
            else:
                method, args, kwargs = message
                reply = ("ok", getattr(target, method)(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - every Python error goes back to the caller
            reply = ("error", _portable(exc))
        try:
            outbox.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            outbox.send(("error", RuntimeError(f"the worker's answer cannot be sent back: {exc}")))


def main(argv: list[str]) -> None:
    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    os.dup2(2, 1)  # whatever native code prints must not reach the caller's stdout (--json)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.basicConfig(level=int(argv[2]), stream=sys.stderr,
                        format="%(levelname)s %(name)s (worker): %(message)s")
    serve(inbox, outbox)


if __name__ == "__main__":
    main(sys.argv[1:])
