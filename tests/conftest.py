"""Loads the shared fixtures (tests/fixtures/) for every test module."""
from tests.fixtures.shared_data import shared_data_dir, shared_subdir  # noqa: F401 - bench/ imports them from here

pytest_plugins = ["tests.fixtures.shared_data", "tests.fixtures.tiny_index"]
