"""Small corpora in the real layouts, written into a temporary folder by the tests."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT = {"PatientName": "Doe^Jane", "PatientID": "MRN-998877", "PatientBirthDate": "19500102",
           "AccessionNumber": "ACC-4242", "PatientAddress": "12 Elm Street",
           "InstitutionName": "Saint Nowhere Hospital", "ReferringPhysicianName": "Who^Doctor"}


def png(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.random.default_rng(seed).random((32, 32)) * 255).astype("uint8")
    Image.fromarray(arr).save(path)
    return path


def dicom(path: Path, pixels: bool = True, modality: str = "CT", body: str = "CHEST",
          series: str | None = None, z: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series or generate_uid()
    if z is not None:
        ds.ImagePositionPatient, ds.InstanceNumber = [0.0, 0.0, z], int(z)
    ds.Modality, ds.BodyPartExamined, ds.StudyDescription = modality, body, "CT THORAX"
    for key, value in PATIENT.items():
        setattr(ds, key, value)
    if pixels:
        arr = (np.arange(64 * 64).reshape(64, 64) % 4000).astype(np.uint16)
        ds.Rows, ds.Columns = arr.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = arr.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def openi_xml(path: Path, uid: str, findings: str, impression: str, image_ids=()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = "".join(f'<parentImage id="{i}"><caption>Xray</caption></parentImage>'
                     for i in image_ids)
    path.write_text(
        f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="{uid}"/>'
        "<licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>"
        "<MedlineCitation><Article><Abstract>"
        '<AbstractText Label="INDICATION">Cough</AbstractText>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
        "</Abstract><AuthorList><Author><LastName>Radiologist</LastName>"
        "<ForeName>Ronald</ForeName></Author></AuthorList></Article>"
        "<IMedAuthor>Ronald Radiologist MD</IMedAuthor></MedlineCitation>"
        f"<MeSH><major>normal</major></MeSH>{images}</eCitation>", encoding="utf-8")
    return path


def covctr(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [("a%0.png", "双肺纹理清晰，右肺上叶见磨玻璃影。", "病毒性肺炎", "Ground glass opacity."),
            ("a%1.png", "双肺未见异常。", "未见异常", "Both lungs are clear."),
            ("missing.png", "左肺下叶实变。", "肺炎", "Left lower lobe consolidation.")]
    with open(root / "reports.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "findings", "terminologies", "COVID", "impression",
                         "reports_En"])
        for name, zh, imp, en in rows:
            writer.writerow([name, zh, zh, "1", imp, en])
    png(root / "images" / "CT_COVID" / "a%0.png")
    png(root / "images" / "CT_COVID" / "a%1.png", 1)
    png(root / "images" / "CT_NonCOVID" / "lonely.png", 2)
    return root


def medpix(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cases = [{"U_id": "MPX1", "TAC": ["MPX1_synpic1"], "MRI": [],
              "Case": {"Title": "Bladder", "History": "73-year-old male", "Findings": "Thick wall.",
                       "Case Diagnosis": "Bladder diverticulum"},
              "Topic": {"Title": "Bladder Diverticulum", "Disease Discussion": "Outlet obstruction."}}]
    descs = [{"Type": "CT", "U_id": "MPX1", "image": "MPX1_synpic1",
              "Description": {"Caption": "Enlarged prostate.", "Plane": "Coronal", "Age": "73",
                              "Sex": "male", "Modality": "CT - noncontrast"},
              "Location": "Genitourinary", "Location Category": "Reproductive and Urinary System"},
             {"Type": "MR", "U_id": "MPX1", "image": "MPX1_synpic404",
              "Description": {"Caption": "Missing."}, "Location Category": "Head"}]
    (root / "Case_topic.json").write_text(json.dumps(cases))
    (root / "Descriptions.json").write_text(json.dumps(descs))
    png(root / "images" / "MPX1_synpic1.jpg")
    return root


def covid(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    header = ["patientid", "offset", "sex", "age", "finding", "view", "modality", "date",
              "location", "folder", "filename", "doi", "url", "license", "clinical_notes"]
    rows = [["17", "0", "M", "65", "COVID-19", "PA", "X-ray", "January 22, 2020", "Wuhan",
             "images", "x1.jpg", "10.1/x", "http://x", "CC BY", "Infiltrate in the left upper lobe."],
            ["18", "", "F", "", "Pneumonia", "", "CT", "", "", "images", "gone.png", "", "", "", ""]]
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows])
    png(root / "images" / "x1.jpg")
    return root
