"""The Generator interface and its registry: Hits (+ the query) -> a cited Report."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from rag.registry import registrar
from rag.types import Hit, Query, Report

GENERATORS: dict[str, type[Generator]] = {}
register_generator = registrar(GENERATORS)


class Generator(ABC):
    name = "base"

    @abstractmethod
    def generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        """A report in `lang` whose every sentence cites the records it rests on."""


def create_generator(name: str = "composer", **options: Any) -> Generator:
    import generator.composer  # noqa: F401 - registers "composer"

    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; choose from {', '.join(GENERATORS)}")
    return GENERATORS[name](**options)
