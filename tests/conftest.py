"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("CASELENS_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or $CASELENS_SHARED_DATA); the test skips when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data sets not found at {path} (set CASELENS_SHARED_DATA)")
    return path


def shared_subdir(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.is_dir():
        pytest.skip(f"{name} not found at {path} (set CASELENS_SHARED_DATA)")
    return path
