"""Any open_clip architecture as the encoder (BiomedCLIP, UniMed-CLIP... when a user has them).

Config keys: "model" (an open_clip architecture name, or "hf-hub:org/name"), "pretrained"
(a local weights file, an open_clip pretrained tag, or null for random weights),
"model_config" (optional path to an architecture JSON, for architectures open_clip lacks),
"allow_download" (default false: hub ids resolve from the local cache only, so an air-gapped
machine gets an error at once instead of minutes of retries).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rag.backbones import file_sha256
from rag.encoder import Encoder, EncoderError, normalize, pick_device, register_encoder

log = logging.getLogger(__name__)


def _hub_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


@register_encoder("open_clip")
class OpenClipEncoder(Encoder):
    def __init__(self, config: dict[str, Any], config_dir: Path):
        if not config.get("allow_download"):
            _hub_offline()  # a hub id then resolves from the local cache only, at once
        try:
            import open_clip
        except ImportError as err:
            raise EncoderError("open_clip is not installed: pip install open_clip_torch") from err
        self.name = config.get("name", f"open_clip-{config['model']}")
        self.low_confidence = float(config.get("low_confidence", 0.2))
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
        self.weights_id = (file_sha256(pretrained) if pretrained and os.path.exists(pretrained)
                           else str(pretrained))
        self.device = pick_device()
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained or None, device=self.device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError) as err:
            raise EncoderError(
                f"cannot load open_clip model {model_name!r} with weights {pretrained!r}: {err}. "
                "Offline, download the weights on a connected machine and give their local path "
                "as \"pretrained\" in the encoder config") from err
        self.model.eval()
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
