"""Encoders: images and texts into one L2-normalised space.

`create_encoder(name)` is the one public constructor. A name is a config under
rag/encoders/model_configs/ ("default", "tiny") or a path to a config JSON. Configs are data: the
type picks the implementation from ENCODERS.
"""
from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from rag.encoders.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
from rag.encoders.domain_probe import DomainProbe, probe_path
from rag.encoders.lexical_features import bags
from rag.manifest import file_sha256
from rag.registry import registrar

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "model_configs"
ENCODERS: dict[str, type[Encoder]] = {}
register_encoder = registrar(ENCODERS)


class EncoderError(RuntimeError):
    """An encoder that cannot be built or loaded; the message says what to do."""


def normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


TAIL_PREFIX = "image_tail."  # heads-file keys of fine-tuned image backbone stages
TAIL_STAGES = "image_tail_stages"  # how many last stages they are (train encoder --unfreeze)


def split_heads_state(state: dict[str, torch.Tensor]) -> tuple[dict, int, dict]:
    """A heads file's state as (projection heads, unfrozen stage count (0: none), their
    weights)."""
    heads = {k: v for k, v in state.items() if not k.startswith(TAIL_PREFIX) and k != TAIL_STAGES}
    tail = {k[len(TAIL_PREFIX):]: v for k, v in state.items() if k.startswith(TAIL_PREFIX)}
    return heads, int(state[TAIL_STAGES]) if TAIL_STAGES in state else 0, tail


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Encoder(ABC):
    """Embeds images and texts into one space; outputs are float32, L2-normalised."""

    name: str
    dim: int
    low_confidence: float = 0.3  # cosine below which retrieval is reported as unsure
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


class ProjectionHeads(nn.Module):
    """Two-layer projections from each backbone into the shared space, plus the learned
    temperature of the symmetric InfoNCE loss (CLIP's logit_scale, initialised at 1/0.07).

    With `lexical_buckets`, the text side also sums a trained vector per hashed term of the
    text (rag/encoders/lexical_features.py), initialised at zero: the channel bilingual training uses
    to carry radiology terms across languages."""

    def __init__(self, image_in: int, text_in: int, dim: int, hidden: int, dropout: float = 0.0,
                 lexical_buckets: int = 0):
        super().__init__()
        self.image = nn.Sequential(nn.LayerNorm(image_in), nn.Dropout(dropout),
                                   nn.Linear(image_in, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.text = nn.Sequential(nn.LayerNorm(text_in), nn.Dropout(dropout),
                                  nn.Linear(text_in, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.lexical_buckets = lexical_buckets
        self.lexical = nn.EmbeddingBag(lexical_buckets, dim, mode="sum") if lexical_buckets else None
        if self.lexical is not None:
            nn.init.zeros_(self.lexical.weight)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def embed_texts(self, text_feats: torch.Tensor, texts: Sequence[str] | None = None):
        """Unnormalised text embeddings; `texts` (the raw strings) feed the lexical channel."""
        out = self.text(text_feats)
        if self.lexical is not None and texts is not None:
            ids, offsets, weights = bags(texts, self.lexical_buckets)
            out = out + self.lexical(ids.to(out.device), offsets.to(out.device),
                                     per_sample_weights=weights.to(out.device))
        return out

    def forward(self, image_feats: torch.Tensor, text_feats: torch.Tensor,
                texts: Sequence[str] | None = None):
        return (nn.functional.normalize(self.image(image_feats), dim=-1),
                nn.functional.normalize(self.embed_texts(text_feats, texts), dim=-1),
                self.logit_scale.exp())


@register_encoder("towers")
class TowersEncoder(Encoder):
    """Frozen image and text backbones with trained projection heads (and, when trained with
    `--unfreeze`, the image backbone's fine-tuned last stages, kept in the heads file)."""

    def __init__(self, config: dict[str, Any], config_dir: Path):
        self.config = config
        self.name = config["name"]
        self.dim = int(config["dim"])
        self.low_confidence = float(config.get("low_confidence", 0.3))
        seed = int(config.get("seed", 0))
        import rag.encoders.open_clip  # noqa: F401 - registers the "open_clip" backbones

        for role, known in (("image_backbone", IMAGE_BACKBONES), ("text_backbone", TEXT_BACKBONES)):
            if config.get(role) not in known:
                raise EncoderError(f"unknown {role} {config.get(role)!r}; known: "
                                   f"{', '.join(sorted(known))}")
        build_img = IMAGE_BACKBONES[config["image_backbone"]]
        build_txt = TEXT_BACKBONES[config["text_backbone"]]
        self.device = pick_device()
        shared = {"seed": seed, "spec": config.get("open_clip"), "config_dir": config_dir}
        self.image_backbone = build_img(image_size=config.get("image_size", 224), **shared)
        self.image_backbone.to(self.device)
        self.text_backbone = build_txt(**shared)
        torch.manual_seed(seed)
        self.heads = ProjectionHeads(self.image_backbone.dim, self.text_backbone.dim, self.dim,
                                     int(config.get("hidden", 512)),
                                     float(config.get("dropout", 0.0)),
                                     int(config.get("lexical_buckets", 0)))
        self.heads_path = config_dir / config["heads"] if config.get("heads") else None
        if self.heads_path is not None:
            if not self.heads_path.exists():
                raise EncoderError(f"projection heads not found: {self.heads_path} "
                                   "(train them with `python cli.py train encoder <corpus>`)")
            state = torch.load(self.heads_path, map_location="cpu", weights_only=True)
            heads, stages, tail = split_heads_state({k: v.float() for k, v in state.items()})
            self.heads.load_state_dict(heads)
            if stages:  # trained with its last image stages unfrozen: they are part of it
                self.image_backbone.split(stages)[1].load_state_dict(tail)
            if probe_path(self.heads_path).exists():
                try:
                    self.domain_probe = DomainProbe.load(probe_path(self.heads_path), self.dim)
                except ValueError as err:
                    raise EncoderError(str(err)) from err
        self.heads.eval().to(self.device)

    @property
    def fingerprint(self) -> str:
        parts = [self.name, self.image_backbone.weights_sha256, self.text_backbone.weights_sha256]
        parts.append(file_sha256(str(self.heads_path)) if self.heads_path else
                     f"random-heads-seed-{self.config.get('seed', 0)}")
        return f"{self.name}@" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def image_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.image_backbone(images)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_backbone(texts)

    @torch.no_grad()
    def project_images(self, feats: np.ndarray) -> np.ndarray:
        out = self.heads.image(torch.from_numpy(feats).to(self.device))
        return normalize(out.cpu().numpy())

    @torch.no_grad()
    def project_texts(self, feats: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        out = self.heads.embed_texts(torch.from_numpy(feats).to(self.device), texts)
        return normalize(out.cpu().numpy())

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.project_images(self.image_features(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self.project_texts(self.text_features(texts), list(texts))


def load_config(name_or_path: str | Path) -> tuple[dict[str, Any], Path]:
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise EncoderError(f"encoder config {name_or_path!r} not found; give one of {known} "
                           "or a path to a config .json")
    return json.loads(path.read_text(encoding="utf-8")), path.parent


def create_encoder(name_or_path: str | Path = "default") -> Encoder:
    """Build the encoder a config names (see rag/encoders/model_configs/)."""
    import rag.encoders.open_clip  # noqa: F401 - registers "open_clip"

    config, config_dir = load_config(name_or_path)
    kind = config.get("type", "towers")
    if kind not in ENCODERS:
        raise EncoderError(f"unknown encoder type {kind!r}; known: {', '.join(ENCODERS)}")
    return ENCODERS[kind](config, config_dir)
