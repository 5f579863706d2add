"""Any open_clip architecture as the encoder (BiomedCLIP, UniMed-CLIP... when a user has them).

Config keys: "model" (an open_clip architecture name, or "hf-hub:org/name"), "pretrained"
(a local weights file, an open_clip pretrained tag, or null for random weights),
"model_config" (optional path to an architecture JSON, for architectures open_clip lacks),
"allow_download" (default false: hub ids resolve from the local cache only, so an air-gapped
machine gets an error at once instead of minutes of retries).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rag.encoders.backbones import (BackboneError, ImageBackbone, TextBackbone, register_image_backbone,
                           register_text_backbone)
from rag.encoders.base import Encoder, EncoderError, normalize, pick_device, register_encoder
from rag.manifest import file_sha256

log = logging.getLogger(__name__)


def _hub_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


@dataclass
class OpenClipModel:
    """A loaded open_clip model with what encoding needs."""
    model: Any
    preprocess: Any  # PIL image -> (3, H, W) tensor, open_clip's own transform
    tokenizer: Any
    weights_id: str  # sha256 of a local weights file, or the pretrained tag
    device: torch.device


def load_open_clip(config: dict[str, Any], config_dir: Path) -> OpenClipModel:
    """Build an open_clip model from config keys "model", "pretrained", "model_config" and
    "allow_download" (paths relative to config_dir); EncoderError saying what to do when the
    weights cannot be had."""
    if not config.get("allow_download"):
        _hub_offline()  # a hub id then resolves from the local cache only, at once
    try:
        import open_clip
    except ImportError as err:
        raise EncoderError("open_clip is not installed: pip install open_clip_torch") from err
    if not config.get("model"):
        raise EncoderError("an open_clip config needs \"model\" (an architecture name or "
                           "hf-hub:org/name)")
    model_name = config["model"]
    pretrained = config.get("pretrained")
    if config.get("model_config"):
        arch = Path(config["model_config"])
        open_clip.add_model_config(arch if arch.is_absolute() else config_dir / arch)
    if pretrained and not pretrained.startswith(("hf-hub:", "http")) and (
            "/" in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))):
        path = Path(pretrained)
        pretrained = str(path if path.is_absolute() else config_dir / path)
        if not Path(pretrained).exists():
            raise EncoderError(f"open_clip weights not found: {pretrained}")
    weights_id = (file_sha256(pretrained) if pretrained and os.path.exists(pretrained)
                  else str(pretrained))
    device = pick_device()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained or None, device=device)
        tokenizer = open_clip.get_tokenizer(model_name)
    except (OSError, RuntimeError, ValueError) as err:
        raise EncoderError(
            f"cannot load open_clip model {model_name!r} with weights {pretrained!r}: {err}. "
            "Offline, download the weights on a connected machine and give their local path "
            "as \"pretrained\" in the encoder config") from err
    return OpenClipModel(model.eval(), preprocess, tokenizer, weights_id, device)


@register_encoder("open_clip")
class OpenClipEncoder(Encoder):
    """The open_clip model's own image and text embeddings, as trained."""

    def __init__(self, config: dict[str, Any], config_dir: Path):
        loaded = load_open_clip(config, config_dir)
        self.name = config.get("name", f"open_clip-{config['model']}")
        self.low_confidence = float(config.get("low_confidence", 0.2))
        self.model, self.preprocess = loaded.model, loaded.preprocess
        self.tokenizer, self.weights_id, self.device = (loaded.tokenizer, loaded.weights_id,
                                                        loaded.device)
        self.dim = int(self._probe_dim())

    def _probe_dim(self) -> int:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(["x"]).to(self.device)).shape[-1]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.name}|{self.weights_id}".encode()).hexdigest()[:16]
        return f"{self.name}@{digest}"

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        batch = torch.stack([self.preprocess(img.convert("RGB")) for img in images])
        return normalize(self.model.encode_image(batch.to(self.device)).float().cpu().numpy())

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.tokenizer(list(texts)).to(self.device)
        return normalize(self.model.encode_text(tokens).float().cpu().numpy())


# --- open_clip towers as frozen backbones under trained caselens heads ---------------------
# A "towers" config with "image_backbone": "open_clip" and / or "text_backbone": "open_clip"
# and an "open_clip" block ({"model": ..., "pretrained": ...}) trains and evaluates projection
# heads on the open_clip model's embeddings exactly like the default encoder's: a user with
# BiomedCLIP or UniMed-CLIP weights on disk gets stage-1 training, the domain probe and
# `eval retrieval` on them.

_LOADED: dict[str, OpenClipModel] = {}


def _shared(spec: dict[str, Any] | None, config_dir: Path | None) -> OpenClipModel:
    """One loaded model for both towers of a config."""
    if not spec:
        raise BackboneError("the open_clip backbone needs an \"open_clip\" block in the encoder "
                            "config: {\"model\": \"ViT-B-16\", \"pretrained\": \"/path/weights\"}")
    key = json.dumps(spec, sort_keys=True) + f"|{config_dir}"
    if key not in _LOADED:
        _LOADED[key] = load_open_clip(spec, config_dir or Path("."))
    return _LOADED[key]


class _OpenClipImages(ImageBackbone):
    def __init__(self, loaded: OpenClipModel, dim: int):
        super().__init__(loaded.model.visual, loaded.model.encode_image, dim,
                         _image_size(loaded.preprocess), loaded.weights_id)
        self.transform = loaded.preprocess
        self.device = loaded.device

    def to(self, device: torch.device) -> _OpenClipImages:
        return self  # the shared model already sits on the device load_open_clip chose

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(img.convert("RGB")) for img in images])


def _image_size(transform) -> int:
    for step in getattr(transform, "transforms", []):
        size = getattr(step, "size", None)
        if size:
            return int(size if isinstance(size, int) else size[0])
    return 224


@register_image_backbone("open_clip")
def open_clip_images(spec: dict | None = None, config_dir: Path | None = None,
                     **_) -> ImageBackbone:
    loaded = _shared(spec, config_dir)
    with torch.no_grad():
        dim = loaded.model.encode_text(loaded.tokenizer(["x"]).to(loaded.device)).shape[-1]
    return _OpenClipImages(loaded, int(dim))


@register_text_backbone("open_clip")
def open_clip_texts(spec: dict | None = None, config_dir: Path | None = None,
                    **_) -> TextBackbone:
    loaded = _shared(spec, config_dir)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = loaded.tokenizer(texts).to(loaded.device)
        return loaded.model.encode_text(tokens).float().cpu().numpy()

    dim = encode(["x"]).shape[-1]
    return TextBackbone(encode, int(dim), loaded.weights_id)
