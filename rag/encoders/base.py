"""Encoders: images and texts into one L2-normalised space.

`create_encoder(name)` is the one public constructor. A name is a config under
rag/encoders/model_configs/ ("default", "tiny") or a path to a config JSON. Configs are data
(EncoderConfig, every default in it): the type picks the implementation from ENCODERS
("towers": rag/encoders/towers.py, "open_clip": rag/encoders/open_clip.py).
"""
from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rag.encoders.domain_probe import DomainProbe
from rag.registry import named_config, registrar

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
ENCODERS: dict[str, type[Encoder]] = {}
register_encoder = registrar(ENCODERS)
# cosine below which retrieval is reported as unsure, when a config does not say
LOW_CONFIDENCE = {"towers": 0.3, "open_clip": 0.2}


class EncoderError(RuntimeError):
    """An encoder that cannot be built or loaded; the message says what to do."""


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class OpenClipSpec:
    """Where an open_clip model comes from: "model" (an architecture name or
    "hf-hub:org/name"), "pretrained" (a local weights file, an open_clip pretrained tag, or
    null for random weights), "model_config" (an architecture JSON for architectures open_clip
    lacks) and "allow_download" (false: hub ids resolve from the local cache only)."""
    model: str | None = None
    pretrained: str | None = None
    model_config: str | None = None
    allow_download: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> OpenClipSpec:
        _refuse_unknown(cls, data, where)
        return cls(**data)


@dataclass(frozen=True)
class EncoderConfig:
    """An encoder config JSON as typed data, with every default in one place.

    "towers" uses name, image_backbone, text_backbone, dim, hidden, dropout, seed, image_size,
    lexical_buckets, heads (a file relative to the config's folder, or null for seeded random
    heads) and open_clip (the block of open_clip backbones); "open_clip" uses its own
    OpenClipSpec keys at the top level. `source` is the JSON as read (run keys hash it)."""
    name: str | None = None
    type: str = "towers"
    image_backbone: str | None = None
    text_backbone: str | None = None
    dim: int | None = None
    hidden: int = 512
    dropout: float = 0.0
    seed: int = 0
    image_size: int = 224
    low_confidence: float | None = None  # None: LOW_CONFIDENCE of the type
    lexical_buckets: int = 0
    heads: str | None = None
    open_clip: OpenClipSpec | None = None
    model: str | None = None
    pretrained: str | None = None
    model_config: str | None = None
    allow_download: bool = False
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.low_confidence is None:
            object.__setattr__(self, "low_confidence", LOW_CONFIDENCE.get(self.type, 0.3))
        if self.name is None and self.type == "open_clip" and self.model:
            object.__setattr__(self, "name", f"open_clip-{self.model}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "encoder config") -> EncoderConfig:
        """The config of a JSON object; EncoderError naming any key it does not know."""
        _refuse_unknown(cls, data, where, ignore={"source"})
        values = {k: v for k, v in data.items() if k != "source"}
        for key, kind in (("dim", int), ("hidden", int), ("seed", int), ("image_size", int),
                          ("lexical_buckets", int), ("dropout", float), ("low_confidence", float)):
            if values.get(key) is not None:
                values[key] = kind(values[key])
        if values.get("open_clip") is not None:
            values["open_clip"] = OpenClipSpec.from_dict(values["open_clip"],
                                                         f"{where}: \"open_clip\" block")
        return cls(**values, source=dict(data))

    @property
    def own_open_clip(self) -> OpenClipSpec:
        """The open_clip model of an "open_clip"-type config (its top-level keys)."""
        return OpenClipSpec(self.model, self.pretrained, self.model_config, self.allow_download)

    def without_heads(self) -> EncoderConfig:
        """The same config with seeded random heads: what training and untrained baselines
        start from."""
        return dataclasses.replace(self, heads=None)


def _refuse_unknown(cls, data: dict[str, Any], where: str, ignore: set[str] = frozenset()):
    known = {f.name for f in dataclasses.fields(cls)} - ignore
    unknown = sorted(set(data) - known)
    if unknown:
        raise EncoderError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(sorted(known))}")


class Encoder(ABC):
    """Embeds images and texts into one space; outputs are float32, L2-normalised."""

    name: str
    dim: int
    low_confidence: float = LOW_CONFIDENCE["towers"]  # cosine below which retrieval is unsure
    domain_probe: DomainProbe | None = None  # names an image embedding's domain, when trained

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Name plus weights hash: an index built with another fingerprint is refused."""

    @abstractmethod
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, dim) embeddings of RGB images."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, dim) embeddings of texts (reports, guideline passages, questions)."""


def load_config(name_or_path: str | Path) -> tuple[EncoderConfig, Path]:
    """(config, the folder its relative paths start from) of a config name or .json path."""
    data, path = named_config(name_or_path, CONFIG_DIR, lambda known: EncoderError(
        f"encoder config {name_or_path!r} not found; give one of {known} or a path to a "
        "config .json"))
    return EncoderConfig.from_dict(data, f"encoder config {str(path)!r}"), path.parent


def create_encoder(name_or_path: str | Path = "default") -> Encoder:
    """Build the encoder a config names (see rag/encoders/model_configs/)."""
    import rag.encoders.open_clip  # noqa: F401 - registers "open_clip"
    import rag.encoders.towers  # noqa: F401 - registers "towers"

    config, config_dir = load_config(name_or_path)
    if config.type not in ENCODERS:
        raise EncoderError(f"unknown encoder type {config.type!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[config.type](config, config_dir)
