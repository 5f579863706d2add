"""Identifiers out of DICOM free text: descriptions are typed by people, and people write
"CT CHEST for Jane Doe MRN 5551234 DOB 01/02/1950" into them.

What is removed: the header's own names (every PN element: patient, referring physician,
operators...) and ids (PatientID, OtherPatientIDs, AccessionNumber...), labelled values
(MRN, DOB, ID...), dates in any common notation, and runs of five or more digits (record
numbers, phone numbers). A field that still looks like it names someone cannot be known
for sure, so the reader keeps only these short descriptions and never a free-text comment.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

REMOVED = "[removed]"
ID_FIELDS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID",
             "MedicalRecordLocator", "PatientAddress", "PatientTelephoneNumbers",
             "InstitutionName", "InstitutionAddress", "StationName")
DATE_FIELDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
DATES = re.compile("|".join((
    r"\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b",  # 1950-01-02, 02/01/1950, 2.1.50
    rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{2,4}})?\b",  # Jan 2, 1950
    rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{2,4}})?\b",  # 2 January 1950
    rf"\b{_MONTH}\s+\d{{4}}\b",  # January 1950
    r"\d{2,4}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?",  # 1950年1月2日
)), re.IGNORECASE)
LABELS = re.compile(  # a label that announces an identifier, with the value after it
    r"\b(?:MRN|DOB|D\.O\.B\.?|SSN|PID|ID|Patient\s*ID|Acc(?:ession)?(?:\s*(?:No|Number|#))?|"
    r"Med(?:ical)?\s*Rec(?:ord)?(?:\s*(?:No|Number|#))?|Birth\s*Date|Date\s+of\s+Birth|Born|"
    r"Name)\b\.?\s*[:#=-]?\s*[^\s;,]+", re.IGNORECASE)
DIGITS = re.compile(r"[\w-]*\d{5,}[\w-]*|\b\d{3}[-. ]\d{3,4}(?:[-. ]\d{4})?\b")
REPEATS = re.compile(rf"{re.escape(REMOVED)}(?:[\s,;:^-]*{re.escape(REMOVED)})+")


def header_identifiers(ds) -> list[str]:
    """The words a header itself says identify someone: each part of every person name, and
    the values of the id, address and date fields, longest first (so that a full value goes
    before its parts)."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR == "PN" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            for name in values:
                found.update(part for part in re.split(r"[\^=\s,]+", str(name)) if len(part) > 1)
    for keyword in ID_FIELDS + DATE_FIELDS:
        value = ds.get(keyword)
        if value:
            values = value if isinstance(value, (list, tuple)) or getattr(value, "VM", 1) > 1 \
                else [value]
            found.update(str(v).strip() for v in values if len(str(v).strip()) > 1)
    birth = str(ds.get("PatientBirthDate", "") or "")
    if re.fullmatch(r"\d{8}", birth):  # the birth date as people write it, whatever the order
        y, m, d = birth[:4], birth[4:6], birth[6:]
        found.update(f"{a}{sep}{b}{sep}{c}" for sep in "-/. " for a, b, c in
                     ((y, m, d), (d, m, y), (m, d, y), (y, str(int(m)), str(int(d))),
                      (str(int(d)), str(int(m)), y), (str(int(m)), str(int(d)), y)))
    return sorted(found, key=len, reverse=True)


def scrub(text: str, identifiers: Iterable[str] = ()) -> str:
    """`text` with identifiers replaced by "[removed]"; unchanged when it holds none."""
    out = text
    for word in identifiers:
        ascii_word = word.isascii()
        pattern = rf"(?<![\w]){re.escape(word)}(?![\w])" if ascii_word else re.escape(word)
        out = re.sub(pattern, REMOVED, out, flags=re.IGNORECASE)
    out = DATES.sub(REMOVED, out)  # before labels: "DOB Jan 2, 1950" is then one value
    out = LABELS.sub(REMOVED, out)
    out = DIGITS.sub(REMOVED, out)
    out = REPEATS.sub(REMOVED, out)
    return out if out != text else text
