"""Built-in corpus readers; importing this package registers them all."""
from corpora.readers import (  # noqa: F401
    covctr,
    covid_chestxray,
    dicom,
    generic,
    guidelines,
    medpix,
    medquad,
    mimic,
    openi_csv,
    openi_xml,
    slake,
)
