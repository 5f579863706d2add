"""The Generator interface and its registry: Hits (+ the query) -> a cited, checked Report.

`generate()` is the public verb and does the shared work once: it times the backend's
`_generate()` and runs the support check on what comes back, whatever wrote it.
"""
from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from typing import Any

from rag.registry import registrar
from rag.types import Hit, Query, Report

GENERATORS: dict[str, type[Generator]] = {}
register_generator = registrar(GENERATORS)
# backends live in their own modules and register themselves when imported
_MODULES = {"auto": "generator.auto",
            "grounded": "generator.composer", "composer": "generator.composer",
            "llm": "generator.llm", "vlm": "generator.vlm", "mllm": "generator.mllm.generator"}


class GeneratorCrashed(RuntimeError):
    """The process that ran a model died (segfault, OOM kill, abort) before it answered.

    Only that worker process is gone: the caller's process and its index are intact, and the
    next call starts a fresh worker. The message is the one sentence a user should see.
    """

    def __init__(self, cause: str):
        self.cause = cause  # e.g. "signal SIGSEGV" or "exit code 3"
        super().__init__(f"the language model crashed: {cause} ; use --generator grounded")


class Generator(ABC):
    name = "base"

    def __init__(self, support: Any = None):
        self.support = support  # a SupportCheck, or None to skip the check

    def generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        """A report in `lang` whose every sentence cites the records it rests on; each
        sentence is then checked against the retrieved evidence when a check is set."""
        started = time.perf_counter()
        report = self._generate(hits, query, lang)
        report.seconds = time.perf_counter() - started
        if self.support is not None:
            self.support.check(report, hits)
        return report

    @abstractmethod
    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        """The backend's draft (sections of cited sentences, warnings, errors)."""

    def close(self) -> None:
        """Free a loaded model (the default holds none)."""


def generator_names() -> list[str]:
    return sorted(_MODULES)


def create_generator(name: str = "grounded", **options: Any) -> Generator:
    """A generator by registered name: grounded (alias composer), llm, vlm, mllm."""
    if name not in GENERATORS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {', '.join(generator_names())}")
    return GENERATORS[name](**options)
