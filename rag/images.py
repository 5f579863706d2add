"""Image loading for every stage: ordinary image files and DICOM, to an 8-bit RGB PIL image."""
from __future__ import annotations

import logging
from pathlib import Path

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


def check_image(path: str | Path) -> None:
    """A cheap readability check (no full decode): ImageError when the file cannot be an image.
    DICOM pixel data is checked by the DICOM reader; here only ordinary image files."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path} (check the path)")
    if is_dicom(path) or path.suffix.lower() in DICOM_SUFFIXES:
        return
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"cannot read image {path}: {err} "
                         "(is it a corrupt or unsupported file?)") from err


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


def dicom_to_image(path: Path, frame: int | None = None) -> Image.Image:
    """Decode a DICOM file: modality LUT (rescale), VOI LUT / window, MONOCHROME1 inverted.

    A multi-frame object gives the asked frame, or its middle one. Compressed transfer syntaxes
    decode through the pylibjpeg plugins (JPEG, JPEG 2000, RLE) when they are installed.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise ImageError(f"cannot read DICOM {path}: {err}") from err
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageError(f"DICOM {path} has no pixel data (a structured report or header-only "
                         "object): no image to use")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for codec problems
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageError(f"cannot decode pixels of DICOM {path} (transfer syntax {syntax}): "
                         f"{err}; install pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and "
                         "pylibjpeg-rle") from err
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    color = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    if frames > 1:
        if frame is not None and not 0 <= frame < frames:
            raise ImageError(f"DICOM {path} has {frames} frames; frame {frame} does not exist")
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
