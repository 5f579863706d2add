"""Image and DICOM decoding on real files from pydicom-data, and on broken ones."""
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rag.images import ImageError, is_dicom, load_image


def dicom_data(name: str):
    try:
        path = distribution("pydicom-data").locate_file(f"data_store/data/{name}")
    except PackageNotFoundError:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    return path


def test_monochrome1_chest_cr_is_inverted_so_bone_is_bright():
    path = dicom_data("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = np.asarray(load_image(path).convert("L"), dtype=np.float32)
    raw = ds.pixel_array.astype(np.float32)
    # MONOCHROME1 stores bright as low values: the decoded image must anti-correlate with raw
    assert np.corrcoef(img.ravel(), raw.ravel())[0, 1] < -0.5


@pytest.mark.parametrize("name", ["RG1_J2KR.dcm", "emri_small_RLE.dcm", "JPEG-LL.dcm",
                                  "MR2_UNCI.dcm", "US1_UNCI.dcm"])
def test_compressed_and_other_modalities_decode(name):
    img = load_image(dicom_data(name))
    assert img.mode == "RGB" and min(img.size) > 8
    assert np.asarray(img).std() > 1  # not a blank frame


def test_lossless_jpeg2000_matches_uncompressed():
    a = np.asarray(load_image(dicom_data("RG1_UNCR.dcm")))
    b = np.asarray(load_image(dicom_data("RG1_J2KR.dcm")))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def _dicom_without_pixels(path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Modality = "SR"
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def test_dicom_without_pixels_and_broken_files_raise_one_clear_error(tmp_path):
    _dicom_without_pixels(tmp_path / "sr.dcm")
    assert is_dicom(tmp_path / "sr.dcm")
    with pytest.raises(ImageError, match="no pixel data"):
        load_image(tmp_path / "sr.dcm")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01\x02")
    with pytest.raises(ImageError):
        load_image(tmp_path / "bad.dcm")


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = (np.arange(64 * 64).reshape(64, 64) * 10).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = np.asarray(load_image(tmp_path / "x.png").convert("L"))
    assert out.min() == 0 and out.max() == 255
