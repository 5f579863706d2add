"""Image loading for every stage: ordinary image files and DICOM, to an 8-bit RGB PIL image."""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}


# One cap for every image read (files, DICOM frames, uploads), checked from the header before
# decoding. PIL's own bomb check is switched off on purpose: it would raise its own error (or
# warn) before ours, without the image's size in words; every read here goes through
# check_pixels instead.
MAX_PIXELS = 200_000_000
MAX_SIDE = 2048  # images are held at most this long once decoded: encoders use a few hundred
Image.MAX_IMAGE_PIXELS = None


class ImageError(ValueError):
    """An image that cannot be used; the message says why and what to do."""


def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 preamble (content, not the name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES or path.suffix.lower() in DICOM_SUFFIXES


@contextmanager
def _pil_errors(path: Path) -> Iterator[None]:
    """PIL's many ways of failing on a bad file, as one ImageError that names it."""
    try:
        yield
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"cannot read image {path}: {err} "
                         "(is it a corrupt or unsupported file?)") from err


def load_image(path: str | Path, frame: int | None = None, max_side: int | None = MAX_SIDE,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image or DICOM file as an 8-bit RGB image; ImageError when it cannot be used.

    `frame` picks one frame of a multi-frame DICOM (default: the middle one). More than
    `max_pixels` is refused from the header, before anything is decoded; an image longer than
    `max_side` comes back reduced (JPEG already while decoding), so that a batch of them holds
    little memory: encoders see a few hundred pixels anyway."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path} (check the path)")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        return dicom_to_image(path, frame, max_pixels=max_pixels, max_side=max_side)
    with _pil_errors(path), Image.open(path) as img:
        check_pixels(img.width, img.height, f"image {path}", max_pixels)
        return _decoded(img, max_side)


def load_image_bytes(data: bytes, max_pixels: int = MAX_PIXELS,
                     max_side: int | None = MAX_SIDE) -> Image.Image:
    """Decode an uploaded file (PNG, JPEG, any PIL format, or DICOM) held in memory, refusing
    more than `max_pixels` before decoding (a decompression bomb); ImageError otherwise."""
    if not data:
        raise ImageError("the uploaded image is empty")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return dicom_to_image(io.BytesIO(data), max_pixels=max_pixels, max_side=max_side)
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_pixels(img.width, img.height, "the uploaded image", max_pixels)
            return _decoded(img, max_side)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        why = "not an image format it knows" if isinstance(err, UnidentifiedImageError) else err
        raise ImageError(f"cannot read the uploaded image: {why} (send a PNG, JPEG or DICOM "
                         "file)") from err


def check_pixels(width: int, height: int, what: str, max_pixels: int = MAX_PIXELS) -> None:
    """ImageError when an image (or one DICOM frame) has more than `max_pixels` pixels: the
    size comes from the header, so a decompression bomb is refused before it is decoded."""
    if width * height > max_pixels:
        raise ImageError(f"{what} is {width} x {height} ({_megapixels(width * height)} "
                         f"megapixels), over the limit of {_megapixels(max_pixels)} megapixels: "
                         "downscale it, or leave it out")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.4g}"


def _decoded(img: Image.Image, max_side: int | None) -> Image.Image:
    """Decode an opened image as RGB, no longer than `max_side`: JPEG decodes straight at 1/2,
    1/4 or 1/8 scale (draft); other formats are decoded, then reduced by an integer factor
    (box average) before the RGB copy is made."""
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img.draft(img.mode, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
        img.load()
        if img.mode == "1":  # bilevel: averaged as 8-bit gray, a third of an RGB copy
            img = img.convert("L")
        elif img.mode not in ("L", "RGB", "RGBA", "LA", "I", "F"):  # reduce cannot average these
            img = _to_rgb(img)
        img = _fit(img, max_side)
    img.load()
    return _to_rgb(img)


def _fit(img: Image.Image, max_side: int | None) -> Image.Image:
    """An integer box reduce to just above `max_side` (cheap, no full-size copy), then a resize
    of that small image to fit."""
    if not max_side or max(img.size) <= max_side:
        return img
    factor = max(img.size) // max_side
    if factor > 1:
        img = img.reduce(factor)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.BOX)
    return img


def check_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> None:
    """A cheap readability check (no full decode): ImageError when the file cannot be an image.

    The pixel cap is checked from the header; PNG chunks are checksummed; a JPEG, whose data
    `verify` does not look into, is decoded at 1/8 scale, enough to find a file cut short; a
    DICOM's pixel data must lie whole in the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        _check_dicom(path, max_pixels)
        return
    with _pil_errors(path):
        with Image.open(path) as img:
            check_pixels(img.width, img.height, f"image {path}", max_pixels)
            img.verify()
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()


def _check_dicom(path: Path, max_pixels: int = MAX_PIXELS) -> None:
    """The header reads, a frame is within the pixel cap, and the pixel data ends inside the
    file (nothing is decoded)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, defer_size="1 KB")
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise ImageError(f"cannot read DICOM {path}: {err}") from err
    tag = next((t for t in (0x7FE00010, 0x7FE00008, 0x7FE00009) if t in ds), None)
    if tag is None:
        raise ImageError(f"DICOM {path} has no pixel data (a structured report, a header-only "
                         "object or a file cut short): no image to use")
    _check_frame(ds, f"DICOM {path}", max_pixels)
    element = ds.get_item(tag, keep_deferred=True)  # a large value stays unread: length, offset
    length, start = getattr(element, "length", None), getattr(element, "value_tell", None)
    size = path.stat().st_size
    if None not in (length, start) and length != 0xFFFFFFFF and start + length > size:
        raise ImageError(f"DICOM {path} is cut short: its pixel data needs {length} bytes, the "
                         f"file holds {size - start} (a truncated copy or download?)")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img, dtype=np.float32))).convert("RGB")
    return img.convert("RGB")


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float32)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip((arr - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _check_frame(ds, what: str, max_pixels: int) -> None:
    """The pixel cap for one DICOM frame, from Rows and Columns: only one frame is decoded."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        return  # a broken header: decoding it says what is wrong
    check_pixels(cols, rows, what, max_pixels)


def _shrink(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """A stored-value array averaged over factor x factor blocks (its dtype kept, so that LUTs
    still index it) to just above `max_side`: a large frame is made small before the float
    copies that rescale and windowing make (the image is fitted to `max_side` after)."""
    factor = max(pixels.shape[:2]) // max_side if max_side else 1
    if factor < 2:
        return pixels
    rows, cols = pixels.shape[0] // factor * factor, pixels.shape[1] // factor * factor
    blocks = pixels[:rows, :cols].reshape(rows // factor, factor, cols // factor, factor,
                                          *pixels.shape[2:])
    return blocks.mean(axis=(1, 3)).round().astype(pixels.dtype)


def dicom_to_image(path: Path | BinaryIO, frame: int | None = None,
                   max_pixels: int = MAX_PIXELS, max_side: int | None = MAX_SIDE) -> Image.Image:
    """Decode a DICOM file: modality LUT (rescale), VOI LUT / window, MONOCHROME1 inverted.

    A multi-frame object gives the asked frame, or its middle one, and only that frame is
    decoded; a frame over `max_pixels` is refused from the header, before its pixel data is
    read. Compressed transfer syntaxes decode through the pylibjpeg plugins (JPEG, JPEG 2000,
    RLE) when they are installed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = path if isinstance(path, (str, Path)) else "upload"  # an upload has no path
    try:  # pixel data is read only when decoded, after the header has passed the cap
        ds = pydicom.dcmread(path, defer_size="1 KB" if name != "upload" else None)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise ImageError(f"cannot read DICOM {name}: {err}") from err
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"DICOM {name} has no pixel data (a structured report or header-only "
                         "object): no image to use")
    _check_frame(ds, "the uploaded DICOM" if name == "upload" else f"DICOM {name}", max_pixels)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1 and frame is not None and not 0 <= frame < frames:
        raise ImageError(f"DICOM {name} has {frames} frames; frame {frame} does not exist")
    try:
        if frames > 1:
            ds.pixel_array_options(index=frames // 2 if frame is None else frame)
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codec problems
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        advice = ("the file may be damaged, or install pylibjpeg, pylibjpeg-libjpeg, "
                  "pylibjpeg-openjpeg and pylibjpeg-rle" if syntax is not None
                  and syntax.is_compressed else "the file is damaged or cut short")
        raise ImageError(f"cannot decode pixels of DICOM {name} (transfer syntax "
                         f"{syntax or 'unknown'}): {err}; {advice}") from err
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    color = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _bounded(Image.fromarray(_scale_to_uint8(apply_color_lut(pixels, ds))), max_side)
    if color:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return _bounded(Image.fromarray(_scale_to_uint8(pixels)), max_side)
    values = apply_modality_lut(_shrink(pixels, max_side), ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
    gray = _scale_to_uint8(np.asarray(values, dtype=np.float32))
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return _fit(Image.fromarray(gray), max_side).convert("RGB")


def _bounded(img: Image.Image, max_side: int | None) -> Image.Image:
    return _fit(img, max_side).convert("RGB")
