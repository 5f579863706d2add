"""Image loading for every stage: ordinary image files and DICOM, to an 8-bit RGB PIL image."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
DICOM_SUFFIXES = {".dcm", ".dicom"}


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


def load_image(path: str | Path, frame: int | None = None) -> Image.Image:
    """Open an image or DICOM file as an 8-bit RGB image; ImageError when it cannot be used.

    `frame` picks one frame of a multi-frame DICOM (default: the middle one)."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image not found: {path} (check the path)")
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        return dicom_to_image(path, frame)
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot read image {path}: {err} "
                         "(is it a corrupt or unsupported file?)") from err


def load_image_bytes(data: bytes, max_pixels: int = 64_000_000) -> Image.Image:
    """Decode an uploaded file (PNG, JPEG, any PIL format, or DICOM) held in memory, refusing
    more than `max_pixels` before decoding (a decompression bomb); ImageError otherwise."""
    if not data:
        raise ImageError("the uploaded image is empty")
    if len(data) >= 132 and data[128:132] == b"DICM":
        return dicom_to_image(io.BytesIO(data), max_pixels=max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ImageError(f"the image has {img.width} x {img.height} pixels; the limit is "
                                 f"{max_pixels:,}: downscale it first")
            img.load()
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        why = "not an image format it knows" if isinstance(err, UnidentifiedImageError) else err
        raise ImageError(f"cannot read the uploaded image: {why} (send a PNG, JPEG or DICOM "
                         "file)") from err


def check_image(path: str | Path) -> None:
    """A cheap readability check (no full decode): ImageError when the file cannot be an image.

    PNG chunks are checksummed; a JPEG, whose data `verify` does not look into, is decoded at
    1/8 scale, enough to find a file cut short; a DICOM's pixel data must lie whole in the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        _check_dicom(path)
        return
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot read image {path}: {err} "
                         "(is it a corrupt or unsupported file?)") from err


def _check_dicom(path: Path) -> None:
    """The header reads, and the pixel data ends inside the file (nothing is decoded)."""
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


def dicom_to_image(path: Path | BinaryIO, frame: int | None = None,
                   max_pixels: int | None = None) -> Image.Image:
    """Decode a DICOM file: modality LUT (rescale), VOI LUT / window, MONOCHROME1 inverted.

    A multi-frame object gives the asked frame, or its middle one. Compressed transfer syntaxes
    decode through the pylibjpeg plugins (JPEG, JPEG 2000, RLE) when they are installed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = path if isinstance(path, (str, Path)) else "upload"  # an upload has no path
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise ImageError(f"cannot read DICOM {name}: {err}") from err
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"DICOM {name} has no pixel data (a structured report or header-only "
                         "object): no image to use")
    size = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    if max_pixels and size * int(ds.get("NumberOfFrames", 1) or 1) > max_pixels:
        raise ImageError(f"DICOM {name} holds more than {max_pixels:,} pixels: send one frame "
                         "or a smaller series")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codec problems
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        advice = ("the file may be damaged, or install pylibjpeg, pylibjpeg-libjpeg, "
                  "pylibjpeg-openjpeg and pylibjpeg-rle" if syntax is not None
                  and syntax.is_compressed else "the file is damaged or cut short")
        raise ImageError(f"cannot decode pixels of DICOM {name} (transfer syntax "
                         f"{syntax or 'unknown'}): {err}; {advice}") from err
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    color = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    if frames > 1:
        if frame is not None and not 0 <= frame < frames:
            raise ImageError(f"DICOM {name} has {frames} frames; frame {frame} does not exist")
        pixels = pixels[frames // 2 if frame is None else frame]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return Image.fromarray(_scale_to_uint8(apply_color_lut(pixels, ds))).convert("RGB")
    if color:
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        return Image.fromarray(_scale_to_uint8(pixels)).convert("RGB")
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0)
    gray = _scale_to_uint8(np.asarray(values, dtype=np.float32))
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray).convert("RGB")
