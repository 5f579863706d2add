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


class ManifestError(RuntimeError):
    """An index that is missing, incomplete or built for another encoder."""


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    data = {"version": FORMAT_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not Path(folder).exists():
        raise ManifestError(f"index not found: {folder} (build it with "
                            "`python cli.py index <corpus> --index {folder}`)")
    if not path.exists():
        raise ManifestError(f"{folder} is not a caselens index (no {MANIFEST}); "
                            "rebuild it with `python cli.py index <corpus>`")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("version") != FORMAT_VERSION:
        raise ManifestError(f"index {folder} has format version {data.get('version')}, this "
                            f"caselens reads version {FORMAT_VERSION}: rebuild the index")
    return data


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
