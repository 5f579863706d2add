"""Name -> implementation tables filled by decorators, and the atomic folder swap every
writer of a multi-file artefact (index, demo corpus) uses."""
from __future__ import annotations

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


def replace_dir(work: Path, dest: Path) -> None:
    """Swap a completely written folder into place: readers see the old one or the new one."""
    old = dest.parent / f".{dest.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(work, dest)
    shutil.rmtree(old, ignore_errors=True)
