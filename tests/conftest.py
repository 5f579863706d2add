"""Loads the shared fixtures (tests/fixtures/) for every test module."""
import pytest

# the helpers' asserts (assert_private, assert_top_k, ...) explain their failures as a test's do
pytest.register_assert_rewrite("tests.fixtures")

from tests.fixtures.shared_data import shared_data_dir, shared_subdir  # noqa: E402, F401 - bench/ imports them from here

pytest_plugins = ["tests.fixtures.shared_data", "tests.fixtures.tiny_index"]
