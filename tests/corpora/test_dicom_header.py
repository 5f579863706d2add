"""Body part and domain of a DICOM object from its header."""
import pydicom
import pytest

from corpora.readers.dicom import body_part


@pytest.mark.parametrize("fields, expected", [
    ({"BodyPartExamined": "CHEST"}, "chest"),
    ({"BodyPartExamined": "THORAX"}, "chest"),
    ({"BodyPartExamined": "KNEE"}, "knee"),
    ({"StudyDescription": "CT THORAX W/O CONTRAST"}, "chest"),
    ({"SeriesDescription": "T2 FLAIR BRAIN"}, "head"),
    ({"StudyDescription": "MR LUMBAR SPINE"}, "spine"),
    ({"StudyDescription": "CT THORACIC SPINE"}, "spine"),
    ({"StudyDescription": "CT ABD/PELVIS"}, "abdomen"),
    ({}, "unknown"),
])
def test_body_part_from_header_or_description(fields, expected):
    ds = pydicom.Dataset()
    for name, value in fields.items():
        setattr(ds, name, value)
    assert body_part(ds) == expected
