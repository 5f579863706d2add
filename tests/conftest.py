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


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    """A tiny-encoder index of the seeded test corpus (tests/test_pipeline.make_corpus), built
    once per module; modules that need another index define their own `index_dir`."""
    from rag import pipeline
    from tests.test_pipeline import make_corpus

    root = tmp_path_factory.mktemp("tiny_index")
    pipeline.index(make_corpus(root / "corpus"), root / "index", encoder="tiny")
    return root / "index"
