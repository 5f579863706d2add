"""The manifest.json written next to every index, and the checks that refuse mismatches."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "records.sqlite"


class ManifestError(RuntimeError):
    """An index that is missing, incomplete or built for another encoder."""


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    data = {"version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The index's manifest, after checking that the files it lists are on disk (an index
    missing a piece must fail, not answer with fewer hits). An index that a crash left
    half-swapped is put back first (rag/index_lock.py)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.exists():
        _recover(folder)
    if not path.exists():
        raise ManifestError(f"{folder} is not a caselens index (no {MANIFEST}); "
                            f"rebuild it with `python cli.py index <corpus> --index {folder}`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestError(f"the manifest {path} is unreadable ({err}); rebuild the index with "
                            f"`python cli.py index <corpus> --index {folder} --rebuild`") from err
    if not isinstance(data, dict):
        raise ManifestError(f"the manifest {path} is not a JSON object; rebuild the index with "
                            f"`python cli.py index <corpus> --index {folder} --rebuild`")
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"index {folder} has format version {data.get('version')}, this "
                            f"caselens reads version {FORMAT_VERSION}: rebuild the index")
    missing = missing_files(data, folder)
    if missing:
        raise ManifestError(
            f"index {folder} is incomplete: {', '.join(missing)} missing; rebuild it with "
            f"`python cli.py index <corpus> --index {folder} --rebuild`")
    return data


def _recover(folder: Path) -> None:
    """Repair a swap a crash interrupted, or say why there is no index at `folder`."""
    from rag.index_lock import IndexBusy, busy_message, holder, recover_swap  # builds on this module

    try:
        recover_swap(folder)
    except IndexBusy:
        pass  # a live writer is swapping: the message below names it
    if folder.exists():
        return
    who = holder(folder)
    if who is not None:
        raise IndexBusy(busy_message(folder, who=who))
    raise ManifestError(f"index not found: {folder} (build it with "
                        f"`python cli.py index <corpus> --index {folder}`)")


def missing_files(manifest: dict[str, Any], folder: Path) -> list[str]:
    """What the manifest says the index holds but is not on disk: the record store and each
    backend's files (VectorIndex.needed_files), relative to `folder`. Stat calls only."""
    from indexers.base import needed_files

    wanted = [STORE]
    described = manifest.get("indexes") or {}
    for backend in manifest.get("backends", []):
        wanted += needed_files(backend, described.get(backend) or {})
    missing: list[str] = []
    for name in wanted:
        top = name.split("/")[0]
        shown = f"{top}/" if top != name and not (Path(folder) / top).exists() else name
        if shown not in missing and not (Path(folder) / name).exists():
            missing.append(shown)  # a whole folder gone is named once
    return missing


def check_encoder(manifest: dict[str, Any], fingerprint: str, folder: Path) -> None:
    built = manifest["encoder"]["fingerprint"]
    if built != fingerprint:
        raise ManifestError(
            f"index {folder} was built with encoder {built}, but the loaded encoder is "
            f"{fingerprint}: rebuild the index with this encoder, or load the encoder it was "
            f"built with (--encoder {manifest['encoder'].get('config', 'NAME')})")


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (weights and models are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
