"""Readers on the real data sets of ../shared/data and on the demo corpus packages."""
from collections import Counter

import numpy as np
import pytest

from corpora.base import open_corpus
from corpora.demo import build_demo, demo_image
from corpora.reading import iter_records
from rag.images import load_image
from tests.fixtures.shared_data import shared_subdir

pytestmark = pytest.mark.shared_data


def counts(root):
    """Through the same checks as `index` (duplicate ids, empty texts)."""
    corpus = open_corpus(root)
    kinds, problems = Counter(), []
    for item in iter_records(corpus, problems):
        kinds[(item.kind, item.lang)] += 1
    return corpus.formats, kinds, problems


def test_cov_ctr():
    formats, kinds, problems = counts(shared_subdir("cov-ctr"))
    assert formats == ["covctr:."]
    assert kinds[("report", "zh")] == 613 and kinds[("report", "en")] == 613
    assert kinds[("image", "")] >= 630
    # the table has three image_ids with two report rows each: reported, and both kept
    assert len(problems) == 3 and all("duplicate image_id" in p.reason for p in problems)


def test_medpix():
    formats, kinds, problems = counts(shared_subdir("medpix-2.0"))
    assert formats == ["medpix:."]
    assert kinds[("image", "en")] == 1850 and kinds[("report", "en")] >= 580
    assert len(problems) < 20


def test_covid_collection():
    formats, kinds, problems = counts(shared_subdir("covid-chestxray"))
    assert formats == ["covid_chestxray:."]
    # two files are listed twice upstream, under two patient ids: the second rows are reported
    assert kinds[("image", "")] == 508 and kinds[("report", "en")] == 508
    assert [p.path for p in problems] == ["metadata.csv:439", "metadata.csv:440"]


@pytest.mark.slow
def test_demo_corpus_from_registry_packages(tmp_path):
    pytest.importorskip("pydicom")
    try:
        summary = build_demo(tmp_path / "demo")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"demo packages missing: {err}")
    assert summary == {"report_xml": 3955, "dicom": 8, "held_out": 1}
    formats, kinds, problems = counts(tmp_path / "demo")
    assert formats == ["dicom:dicom", "openi_xml:openi"]
    # 6 single-frame files, and 3 representative frames of each multi-frame one
    # (emri_small_RLE.dcm has 10 frames, liver.dcm 3); the asked chest CR is held out
    assert kinds[("report", "en")] > 3900 and kinds[("image", "")] == 12
    assert all("no findings or impression" in p.reason for p in problems)
    for path in (tmp_path / "demo" / "dicom").iterdir():
        assert np.asarray(load_image(path)).std() > 1, path.name
    assert demo_image(tmp_path / "demo").exists()
    build_demo(tmp_path / "demo")  # idempotent rebuild


def test_openi_csv_and_bilingual_pairs():
    formats, kinds, problems = counts(shared_subdir("openi-iu-xray"))
    assert formats == ["openi_csv:."]
    assert kinds[("report", "zh")] > 3000 and kinds[("report", "en")] > 6000
    assert kinds[("image", "")] == 5 and len(problems) < 50


def test_medquad():
    formats, kinds, problems = counts(shared_subdir("medquad"))
    assert formats == ["medquad:."] and kinds[("guideline", "en")] > 16000 and not problems


def test_slake_questions_in_both_languages_without_images():
    formats, kinds, problems = counts(shared_subdir("slake-1.0-qa"))
    assert formats == ["slake:."]
    assert kinds[("qa", "en")] + kinds[("qa", "zh")] == 14028 and kinds[("qa", "zh")] > 6900
    assert [p.path for p in problems] == ["imgs/"]  # the images are not distributed here
