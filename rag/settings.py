"""Every environment variable caselens reads, read in one place.

The edges (cli.py's commands, the HTTP app, the child process of a model worker, and
rag.pipeline's index / delete / open_index / open_session) call `Settings.from_env()` once
and hand the values down; the stages below take them as parameters and never look at the
environment, so a test or a library user sets them explicitly. An explicit option still wins
over a variable.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rag.types import InputError

CACHE = Path.home() / ".cache" / "caselens"
# the variables, by the Settings field each one fills
VARIABLES = {
    "models_dir": "CASELENS_MODELS",
    "translations": "CASELENS_TRANSLATIONS",
    "threads": "CASELENS_THREADS",
    "llm_extra_bufts": "CASELENS_LLM_EXTRA_BUFTS",
    "vlm_model": "CASELENS_VLM",
    "allow_download": "CASELENS_ALLOW_DOWNLOAD",
    "qdrant_url": "CASELENS_QDRANT_URL",
    "qdrant_api_key": "CASELENS_QDRANT_API_KEY",
    "api_key": "CASELENS_API_KEY",
}


@dataclass(frozen=True)
class Settings:
    """What the environment configures; the defaults are what an empty environment gives."""

    models_dir: Path = field(default_factory=lambda: CACHE / "models")  # assembled GGUF files
    translations: Path = field(  # the user-level translation memory
        default_factory=lambda: CACHE / "translation_memory.sqlite")
    threads: int | None = None  # torch threads of the mllm generator (None: torch's choice)
    llm_extra_bufts: str | None = None  # "1" / "0" forces llama.cpp's extra buffer types
    vlm_model: str | None = None  # the vlm generator's model when --vlm-path is not given
    allow_download: bool = False  # the vlm generator may download from the hub
    qdrant_url: str | None = None  # a Qdrant server instead of the embedded store
    qdrant_api_key: str | None = None
    api_key: str | None = None  # the key `serve` requires in X-API-Key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings an environment gives; an empty or unset variable means its default."""
        given = {name: environ.get(variable) or None for name, variable in VARIABLES.items()}
        threads = given["threads"]
        if threads is not None and not (threads.strip().isdigit() and int(threads) > 0):
            raise InputError(f"{VARIABLES['threads']} must be a positive whole number, "
                             f"not {threads!r}")
        defaults = cls()
        return cls(models_dir=Path(given["models_dir"]) if given["models_dir"] else defaults.models_dir,
                   translations=(Path(given["translations"]) if given["translations"]
                                 else defaults.translations),
                   threads=int(threads) if threads is not None else None,
                   llm_extra_bufts=given["llm_extra_bufts"], vlm_model=given["vlm_model"],
                   allow_download=given["allow_download"] == "1",
                   qdrant_url=given["qdrant_url"], qdrant_api_key=given["qdrant_api_key"],
                   api_key=given["api_key"])

    def backend_options(self, backend: str) -> dict[str, str]:
        """The options this environment gives a vector backend (below any given explicitly):
        a Qdrant server's URL and API key."""
        if backend != "qdrant":
            return {}
        given = {"url": self.qdrant_url, "api_key": self.qdrant_api_key}
        return {name: value for name, value in given.items() if value}
