"""The Generator interface and its registry: Hits (+ the query) -> a cited, checked Report.

`generate()` is the public verb and does the shared work once: it times the backend's
`_generate()` and runs the support check on what comes back, whatever wrote it.
"""
from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rag.registry import registrar
from rag.settings import Settings
from rag.types import Hit, InputError, Query, Report

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


class GeneratorError(Exception):
    """A generator cannot run as asked: its model is not installed, not found, or not one it
    can load. The message is one sentence that says what to install or give instead."""


class ModelNotFound(GeneratorError, FileNotFoundError):
    """A model file or folder the generator needs is not there."""


class ModelUnusable(GeneratorError, ValueError):
    """A model, or what runs it, is there but cannot be used (wrong kind, changed file,
    missing package)."""


@dataclass(frozen=True)
class GeneratorOptions:
    """What a user may set for any generator (the CLI's flags, the service's settings) and what
    the environment sets; each generator takes the ones it uses (`Generator.keywords`), so a
    front end never needs to know a generator's keyword names."""

    llm_path: Path | None = None  # a GGUF file (llm, auto)
    llm_model: str | None = None  # a packaged GGUF by name (llm, auto)
    vlm_path: str | None = None  # a vision-language model folder or hub id (vlm)
    mllm: str | None = None  # a shipped variant or trained folder (mllm)
    max_tokens: int | None = None
    max_seconds: float | None = None
    settings: Settings | None = None  # the environment's; None: every default

    @classmethod
    def from_env(cls, **chosen: Any) -> GeneratorOptions:
        """The chosen options with the environment's settings (for the edges: the CLI)."""
        return cls(settings=Settings.from_env(), **chosen)

    @property
    def env(self) -> Settings:
        return self.settings or Settings()

    def limits(self) -> dict[str, Any]:
        """The answer-length limits, as the keywords most generators take them."""
        return {"max_tokens": self.max_tokens, "max_seconds": self.max_seconds}

    def with_settings(self, settings: Settings) -> GeneratorOptions:
        """These options, with `settings` where none were given."""
        return self if self.settings is not None else replace(self, settings=settings)


class Generator(ABC):
    name = "base"

    @classmethod
    def keywords(cls, options: GeneratorOptions) -> dict[str, Any]:
        """This generator's constructor keywords from the shared options (None: its default)."""
        return {}

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


def generator_class(name: str) -> type[Generator]:
    if name not in GENERATORS and name in _MODULES:
        importlib.import_module(_MODULES[name])
    if name not in GENERATORS:
        raise InputError(f"unknown generator {name!r}; choose from {', '.join(generator_names())}")
    return GENERATORS[name]


def generator_keywords(name: str, options: GeneratorOptions) -> dict[str, Any]:
    """The constructor keywords of generator `name` from the shared options, unset ones left
    out (the generator's defaults apply)."""
    chosen = generator_class(name).keywords(options)
    return {key: value for key, value in chosen.items() if value is not None}


def create_generator(name: str = "grounded", **options: Any) -> Generator:
    """A generator by registered name: grounded (alias composer), llm, vlm, mllm, auto."""
    return generator_class(name)(**options)
