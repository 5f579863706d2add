"""Model factories loaded by dotted path into a worker process (generator/worker.py) by the
tests: llama-like fakes that answer, crash on purpose (abort, SIGSEGV, exit) or hang.

A fake crashes on the request whose user text holds its trigger word, so one worker can answer,
crash, and be replaced by the next call.
"""
from __future__ import annotations

import os
import signal
import time

ANSWER = "Findings:\nThe heart is normal in size [1].\nImpression:\nSmall left pleural effusion [1]."


def _chunk(content=None, finish=None):
    return {"choices": [{"index": 0, "delta": {"content": content} if content else {},
                         "finish_reason": finish}]}


class TriggeredLlama:
    """Streams ANSWER, or does what the user text asks for."""

    def __init__(self, **load_options):
        self.load_options = load_options

    def create_chat_completion(self, messages, **options):
        user = messages[-1]["content"]
        if "ABORT" in user:
            os.abort()
        if "SEGFAULT" in user:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "EXIT3" in user:
            os._exit(3)
        if "HANG" in user:
            time.sleep(60)
        if "RAISE" in user:
            raise ValueError("the fake model refuses this prompt")
        if "WHO" in user:  # where it runs, and how it was loaded
            answer = f"pid {os.getpid()} extra_bufts {self.load_options['use_extra_bufts']}"
        else:
            answer = ANSWER
        return iter([_chunk(answer), _chunk(finish="stop")])

    def close(self):
        pass


def triggered(**load_options):
    return TriggeredLlama(**load_options)


def aborting_on_load(**load_options):
    os.abort()


class Echo:
    """A plain object for ModelWorker's own tests."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.pid = os.getpid()

    def echo(self, text: str, repeat: int = 1) -> str:
        return self.prefix + text * repeat

    def whose(self) -> int:
        return os.getpid()

    def nap(self, seconds: float) -> None:
        time.sleep(seconds)

    def fail(self) -> None:
        raise FileNotFoundError("no such model file: absent.gguf")

    def unpicklable(self):
        return lambda: None
