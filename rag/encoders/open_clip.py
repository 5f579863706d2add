"""Any open_clip architecture as the encoder (BiomedCLIP, UniMed-CLIP... when a user has them).

Config keys (OpenClipSpec in rag/encoders/base.py): "model" (an open_clip architecture name,
or "hf-hub:org/name"), "pretrained" (a local weights file, an open_clip pretrained tag, or null
for random weights), "model_config" (optional path to an architecture JSON, for architectures
open_clip lacks), "allow_download" (default false: hub models and pretrained tags resolve to
files of the local caches before open_clip sees them, so an air-gapped machine gets an error at
once instead of minutes of retries, and the process environment is left alone).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from rag.encoders.backbones import (BackboneError, ImageBackbone, TextBackbone, register_image_backbone,
                           register_text_backbone)
from rag.encoders.base import (Encoder, EncoderConfig, EncoderError, OpenClipSpec, normalize,
                               pick_device, register_encoder)
from rag.manifest import file_sha256

log = logging.getLogger(__name__)


ADVICE = ("Offline, download the weights on a connected machine and give their local path "
          "as \"pretrained\" in the encoder config")


def _cached_hub_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """The first of `filenames` in the local Hugging Face cache of `repo_id`: a look at the
    cache folder only (hf_hub_download, even with local_files_only, may call the hub)."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):  # otherwise None or "known not to exist"
            return found
    return None


def _cached_tag_weights(tag: dict[str, Any]) -> str | None:
    """The local file of an open_clip pretrained tag, looked up where open_clip's own download
    would have put it (its Hugging Face repo first, .safetensors before .bin, then its URL
    cache), or None."""
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    if tag.get("file"):
        return tag["file"]
    if tag.get("hf_hub"):
        repo_id, filename = os.path.split(tag["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        found = _cached_hub_file(repo_id, [*_get_safe_alternatives(filename), filename])
        if found:
            return found
    if tag.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(tag["url"])
        if path.is_file():
            return str(path)
    return None


# what a pretrained tag sets of open_clip's preprocessing (create_model_and_transforms's image_*)
_TAG_PREPROCESSING = ("mean", "std", "interpolation", "resize_mode")
LOCAL_DIR = "local-dir:"  # open_clip's schema for a model folder on disk


@dataclass
class LocalLoad:
    """What open_clip gets so that it reads files only: the model (a built-in name or a
    "local-dir:" folder), the weights file, create_model_and_transforms's extra arguments
    and, for a Hugging Face tokenizer, its cached folder and the architecture's text_cfg."""
    source: str
    weights: str | None = None
    create_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer_folder: str | None = None
    text_cfg: dict[str, Any] = field(default_factory=dict)


def _cached_repo(repo_id: str, what: str) -> str:
    """The local snapshot folder of a Hugging Face repo (no hub call); EncoderError if none."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any miss means: not on this machine
        raise EncoderError(f"{what} {repo_id!r} is not in the local Hugging Face cache "
                           f"({err}). {ADVICE}") from err


def _model_cfg(open_clip, source: str) -> dict[str, Any]:
    if source.startswith(LOCAL_DIR):
        path = Path(source[len(LOCAL_DIR):]) / "open_clip_config.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return data.get("model_cfg") or {}
    return open_clip.get_model_config(source.replace("/", "-")) or {}


def _local_only(open_clip, model_name: str, pretrained: str | None) -> LocalLoad:
    """The LocalLoad of a model: a hub model becomes its cached folder, a pretrained tag its
    cached file plus the tag's preprocessing, a Hugging Face text tower or tokenizer named
    in the architecture its cached folder; EncoderError when a cache lacks one."""
    from open_clip.factory import _find_checkpoint_in_dir

    load = LocalLoad(model_name, pretrained)
    if model_name.startswith("hf-hub:"):
        folder = _cached_repo(model_name[len("hf-hub:"):], "open_clip model")
        load.source, load.weights = f"{LOCAL_DIR}{folder}", None
    elif pretrained and not pretrained.startswith("http") and not os.path.exists(pretrained):
        tag = open_clip.get_pretrained_cfg(model_name.replace("/", "-"), pretrained)
        if tag:  # an unknown tag is left to open_clip, whose error names the known ones
            load.weights = _cached_tag_weights(tag)
            if load.weights is None:
                raise EncoderError(f"cannot load open_clip model {model_name!r} with weights "
                                   f"{pretrained!r}: they are not in the local caches. {ADVICE}")
            from open_clip.transform import merge_preprocess_dict

            preprocessing = merge_preprocess_dict({}, tag)
            load.create_kwargs = {f"image_{key}": preprocessing[key]
                                  for key in _TAG_PREPROCESSING if key in preprocessing}
    text_cfg = load.text_cfg = _model_cfg(open_clip, load.source).get("text_cfg", {})
    if text_cfg.get("hf_model_name") and not Path(text_cfg["hf_model_name"]).is_dir():
        checkpoint = (_find_checkpoint_in_dir(Path(load.source[len(LOCAL_DIR):]))
                      if load.source.startswith(LOCAL_DIR) else load.weights)
        # the text_cfg open_clip would build, with the tower's config read from the cache
        load.create_kwargs["text_cfg"] = {
            **text_cfg, "hf_model_name": _cached_repo(text_cfg["hf_model_name"], "text tower"),
            "hf_model_pretrained": checkpoint is None}
    if text_cfg.get("hf_tokenizer_name"):
        load.tokenizer_folder = _cached_repo(text_cfg["hf_tokenizer_name"], "tokenizer")
    return load


def _tokenizer(open_clip, load: LocalLoad):
    """open_clip's tokenizer of the model, a Hugging Face one from its cached folder."""
    if load.tokenizer_folder is None:
        return open_clip.get_tokenizer(load.source)
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    text_cfg = load.text_cfg
    return HFTokenizer(load.tokenizer_folder,
                       context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                       tokenizer_mode=text_cfg.get("tokenizer_mode"),
                       **text_cfg.get("tokenizer_kwargs", {}))


@dataclass
class OpenClipModel:
    """A loaded open_clip model with what encoding needs."""
    model: Any
    preprocess: Any  # PIL image -> (3, H, W) tensor, open_clip's own transform
    tokenizer: Any
    weights_id: str  # sha256 of a local weights file, or the pretrained tag
    device: torch.device


def load_open_clip(spec: OpenClipSpec, config_dir: Path) -> OpenClipModel:
    """Build the open_clip model of a spec (paths relative to config_dir); EncoderError saying
    what to do when the weights cannot be had."""
    try:
        import open_clip
    except ImportError as err:
        raise EncoderError("open_clip is not installed: pip install open_clip_torch") from err
    if not spec.model:
        raise EncoderError("an open_clip config needs \"model\" (an architecture name or "
                           "hf-hub:org/name)")
    model_name = spec.model
    pretrained = spec.pretrained
    if spec.model_config:
        arch = Path(spec.model_config)
        open_clip.add_model_config(arch if arch.is_absolute() else config_dir / arch)
    if pretrained and not pretrained.startswith(("hf-hub:", "http")) and (
            "/" in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))):
        path = Path(pretrained)
        pretrained = str(path if path.is_absolute() else config_dir / path)
        if not Path(pretrained).exists():
            raise EncoderError(f"open_clip weights not found: {pretrained}")
    weights_id = (file_sha256(pretrained) if pretrained and os.path.exists(pretrained)
                  else str(pretrained))
    load = (LocalLoad(model_name, pretrained) if spec.allow_download
            else _local_only(open_clip, model_name, pretrained))
    device = pick_device()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            load.source, pretrained=load.weights or None, device=device, **load.create_kwargs)
        tokenizer = _tokenizer(open_clip, load)
    except (OSError, RuntimeError, ValueError) as err:
        raise EncoderError(
            f"cannot load open_clip model {model_name!r} with weights {pretrained!r}: {err}. "
            f"{ADVICE}") from err
    return OpenClipModel(model.eval(), preprocess, tokenizer, weights_id, device)


@register_encoder("open_clip")
class OpenClipEncoder(Encoder):
    """The open_clip model's own image and text embeddings, as trained."""

    def __init__(self, config: EncoderConfig, config_dir: Path):
        loaded = load_open_clip(config.own_open_clip, config_dir)
        self.name, self.low_confidence = config.name, config.low_confidence
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

_LOADED: dict[tuple[OpenClipSpec, Path | None], OpenClipModel] = {}


def _shared(spec: OpenClipSpec | None, config_dir: Path | None) -> OpenClipModel:
    """One loaded model for both towers of a config."""
    if not spec:
        raise BackboneError("the open_clip backbone needs an \"open_clip\" block in the encoder "
                            "config: {\"model\": \"ViT-B-16\", \"pretrained\": \"/path/weights\"}")
    key = (spec, config_dir)
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
def open_clip_images(spec: OpenClipSpec | None = None, config_dir: Path | None = None,
                     **_) -> ImageBackbone:
    loaded = _shared(spec, config_dir)
    with torch.no_grad():
        dim = loaded.model.encode_text(loaded.tokenizer(["x"]).to(loaded.device)).shape[-1]
    return _OpenClipImages(loaded, int(dim))


@register_text_backbone("open_clip")
def open_clip_texts(spec: OpenClipSpec | None = None, config_dir: Path | None = None,
                    **_) -> TextBackbone:
    loaded = _shared(spec, config_dir)

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        tokens = loaded.tokenizer(texts).to(loaded.device)
        return loaded.model.encode_text(tokens).float().cpu().numpy()

    dim = encode(["x"]).shape[-1]
    return TextBackbone(encode, int(dim), loaded.weights_id)
