"""Image and DICOM decoding on real files from pydicom-data, on broken ones, and on ones too
large to decode (the pixel cap)."""
import warnings
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rag.images import ImageError, check_image, is_dicom, load_image, load_image_bytes
from tests.fixtures.image_files import png_bomb


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


# -- the pixel cap and bounded decoding --------------------------------------------------------

@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_bomb(40_000, 40_000))
    return path


OVER = r"is 40000 x 40000 \(1600 megapixels\), over the limit of 200 megapixels"


def test_a_decompression_bomb_is_refused_from_its_header_in_every_reader(bomb):
    assert bomb.stat().st_size < 300_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even PIL's DecompressionBombWarning
        for read in (load_image, check_image, lambda p: load_image_bytes(p.read_bytes())):
            with pytest.raises(ImageError, match=OVER):
                read(bomb)


def test_a_dicom_frame_over_the_cap_is_refused_before_its_pixels_are_read(tmp_path):
    path = tmp_path / "huge.dcm"
    ds = pydicom.dcmread(dicom_data("MR2_UNCI.dcm"))
    ds.Rows = ds.Columns = 20_000  # the header lies; the pixel data is the small original
    ds.save_as(path)
    for read in (load_image, check_image, lambda p: load_image_bytes(p.read_bytes())):
        with pytest.raises(ImageError, match=r"20000 x 20000 \(400 megapixels\), over the limit"):
            read(path)
    assert load_image(dicom_data("MR2_UNCI.dcm"), max_pixels=1024 * 1024)  # 1024 x 1024 is fine
    with pytest.raises(ImageError, match="over the limit of 0.01 megapixels"):
        load_image(dicom_data("MR2_UNCI.dcm"), max_pixels=10_000)


@pytest.mark.parametrize("suffix,mode", [(".png", "L"), (".png", "1"), (".jpg", "RGB"),
                                         (".tif", "I;16")])
def test_a_large_image_is_decoded_small(tmp_path, suffix, mode):
    arr = (np.indices((900, 1200)).sum(0) % 256).astype(np.uint16 if mode == "I;16" else np.uint8)
    path = tmp_path / f"big{suffix}"
    Image.fromarray(arr).convert(mode if mode != "I;16" else "I;16").save(path)
    img = load_image(path, max_side=256)
    assert img.mode == "RGB" and max(img.size) <= 256 and min(img.size) >= 150
    assert load_image(path, max_side=None).size == (1200, 900)


def test_a_large_dicom_frame_is_decoded_small_and_keeps_its_contrast():
    path = dicom_data("RG1_UNCI.dcm")
    full, small = load_image(path, max_side=None), load_image(path, max_side=300)
    assert max(small.size) <= 300 < max(full.size)
    shrunk = np.asarray(full.convert("L").resize(small.size, Image.BOX), dtype=np.float32)
    assert np.corrcoef(shrunk.ravel(), np.asarray(small.convert("L")).ravel())[0, 1] > 0.95
