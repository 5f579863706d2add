"""Name -> implementation tables filled by decorators, named JSON configs, and the atomic
folder swap every writer of a multi-file artefact (index, demo corpus) uses."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def registrar(table: dict[str, Any]) -> Callable[[str], Callable[[Any], Any]]:
    """A decorator factory that files an implementation under a name (and sets its `name`)."""

    def register(name: str):
        def wrap(obj):
            if isinstance(obj, type):
                obj.name = name
            table[name] = obj
            return obj
        return wrap

    return register


def named_config(name_or_path: str | Path, folder: Path,
                 missing: Callable[[str], Exception]) -> tuple[dict[str, Any], Path]:
    """(content, path) of a JSON config given by name (`folder`/<name>.json) or by a path to a
    .json; `missing(known)` (the known names, comma-separated) is raised when there is none, so
    each kind of config keeps its own error and advice."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = folder / f"{name_or_path}.json"
    if not path.is_file():
        raise missing(", ".join(sorted(p.stem for p in folder.glob("*.json"))))
    return json.loads(path.read_text(encoding="utf-8")), path


def replace_dir(work: Path, dest: Path) -> None:
    """Swap a completely written folder into place: readers see the old one or the new one."""
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(work, dest)
    shutil.rmtree(old, ignore_errors=True)
