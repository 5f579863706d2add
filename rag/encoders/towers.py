"""The "towers" encoder: frozen image and text backbones (rag/encoders/backbones.py) under
trained projection heads, and the heads file's layout (projection heads plus, after
`train encoder --unfreeze`, the image backbone's fine-tuned last stages)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from rag.encoders.backbones import IMAGE_BACKBONES, TEXT_BACKBONES
from rag.encoders.base import (Encoder, EncoderConfig, EncoderError, normalize, pick_device,
                               register_encoder)
from rag.encoders.domain_probe import DomainProbe, probe_path
from rag.encoders.lexical_features import bags
from rag.manifest import file_sha256

TAIL_PREFIX = "image_tail."  # heads-file keys of fine-tuned image backbone stages
TAIL_STAGES = "image_tail_stages"  # how many last stages they are (train encoder --unfreeze)


def split_heads_state(state: dict[str, torch.Tensor]) -> tuple[dict, int, dict]:
    """A heads file's state as (projection heads, unfrozen stage count (0: none), their
    weights)."""
    heads = {k: v for k, v in state.items() if not k.startswith(TAIL_PREFIX) and k != TAIL_STAGES}
    tail = {k[len(TAIL_PREFIX):]: v for k, v in state.items() if k.startswith(TAIL_PREFIX)}
    return heads, int(state[TAIL_STAGES]) if TAIL_STAGES in state else 0, tail


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

    def __init__(self, config: EncoderConfig, config_dir: Path):
        import rag.encoders.open_clip  # noqa: F401 - registers the "open_clip" backbones

        self.config = config
        if not config.name or not config.dim:
            raise EncoderError("a towers encoder config needs \"name\" and \"dim\"")
        self.name, self.dim, self.low_confidence = config.name, config.dim, config.low_confidence
        for role, value, known in (("image_backbone", config.image_backbone, IMAGE_BACKBONES),
                                   ("text_backbone", config.text_backbone, TEXT_BACKBONES)):
            if value not in known:
                raise EncoderError(f"unknown {role} {value!r}; known: "
                                   f"{', '.join(sorted(known))}")
        build_img = IMAGE_BACKBONES[config.image_backbone]
        build_txt = TEXT_BACKBONES[config.text_backbone]
        self.device = pick_device()
        shared = {"seed": config.seed, "spec": config.open_clip, "config_dir": config_dir}
        self.image_backbone = build_img(image_size=config.image_size, **shared)
        self.image_backbone.to(self.device)
        self.text_backbone = build_txt(**shared)
        torch.manual_seed(config.seed)
        self.heads = ProjectionHeads(self.image_backbone.dim, self.text_backbone.dim, self.dim,
                                     config.hidden, config.dropout, config.lexical_buckets)
        self.heads_path = config_dir / config.heads if config.heads else None
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
                     f"random-heads-seed-{self.config.seed}")
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
