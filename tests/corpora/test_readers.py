import json

import pytest

from corpora.base import CorpusError, open_corpus
from tests.fixtures import image_files, layouts
from tests.fixtures.reading import assert_private, read
from tests.fixtures.small_corpora import indiana_reports


def test_covctr_links_chinese_and_english_reports_to_the_image(tmp_path):
    root = layouts.covctr(tmp_path / "whatever-name")
    corpus, records, problems = read(root)
    assert corpus.formats == ["covctr:."]
    by_study = {}
    for rec in records:
        by_study.setdefault(rec.study, []).append(rec)
    kinds = sorted((r.kind, r.lang) for r in by_study["covctr:a%0.png"])
    assert kinds == [("image", ""), ("report", "en"), ("report", "zh")]
    zh = next(r for r in by_study["covctr:a%0.png"] if r.lang == "zh")
    assert zh.meta["sections"]["impression"] == "病毒性肺炎" and zh.domain == "chest-ct"
    assert zh.meta["split_group"] == "a"
    assert [p.path for p in problems] == ["missing.png"]
    assert any(r.image == "images/CT_NonCOVID/lonely.png" for r in records)
    assert len(by_study["covctr:missing.png"]) == 2  # reports kept without their image


def test_openi_xml_keeps_sections_drops_authors_and_finds_images(tmp_path):
    root = tmp_path / "reports"
    layouts.openi_xml(root / "ecgen-radiology" / "1.xml", "CXR1", "Heart size normal.",
                       "No acute disease.", ["CXR1_1_IM-0001-3001"])
    layouts.openi_xml(root / "ecgen-radiology" / "2.xml", "CXR2", "", "")
    (root / "ecgen-radiology" / "3.xml").write_text("<eCitation><broken")
    image_files.png(root / "images" / "CXR1_1_IM-0001-3001.png")
    _, records, problems = read(root)
    report = next(r for r in records if r.kind == "report")
    assert report.meta["sections"] == {"findings": "Heart size normal.",
                                       "impression": "No acute disease."}
    assert report.study == "openi:CXR1" and "by-nc-nd" in report.license
    image = next(r for r in records if r.kind == "image")
    assert image.study == report.study and image.image_path().exists()
    assert sorted(p.path for p in problems) == ["ecgen-radiology/2.xml", "ecgen-radiology/3.xml"]
    assert_private(records)


def test_dicom_folder_never_stores_patient_fields(tmp_path):
    root = tmp_path / "export"
    image_files.dicom(root / "p1" / "s1" / "IM0001")  # no suffix, as PACS exports often are
    image_files.dicom(root / "p1" / "s1" / "IM0002", pixels=False)
    (root / "p1" / "s1" / "IM0003.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40)
    corpus, records, problems = read(root)
    assert corpus.formats == ["dicom:."]
    assert len(records) == 1
    rec = records[0]
    assert (rec.modality, rec.body_part, rec.domain) == ("ct", "chest", "chest-ct")
    assert rec.study.startswith("dicom:") and len(rec.study) == len("dicom:") + 16
    reasons = " ".join(p.reason for p in problems)
    assert "without pixel data" in reasons and len(problems) == 2
    assert_private(records)


def test_medpix_case_images_captions_and_topic(tmp_path):
    _, records, problems = read(layouts.medpix(tmp_path / "mp"))
    kinds = sorted(r.kind for r in records)
    assert kinds == ["guideline", "image", "report"]
    image = next(r for r in records if r.kind == "image")
    assert image.text == "Enlarged prostate." and image.domain == "abdomen-ct"  # abdomino-pelvic
    report = next(r for r in records if r.kind == "report")
    assert report.meta["sections"]["impression"] == "Bladder diverticulum"
    assert [p.path for p in problems] == ["MPX1_synpic404"]
    assert "73" not in json.dumps(image.to_dict()) and "male" not in json.dumps(image.to_dict())


def test_covid_collection_hashes_patients_and_keeps_licence(tmp_path):
    _, records, problems = read(layouts.covid(tmp_path / "cc"))
    image = next(r for r in records if r.kind == "image")
    assert image.license == "CC BY" and image.domain == "chest-xray"
    assert image.meta["split_group"].startswith("patient:") and "17" not in image.meta["split_group"]
    assert next(r for r in records if r.kind == "report").text.startswith("Infiltrate")
    assert [p.path for p in problems] == ["gone.png"]
    dumped = json.dumps([r.to_dict() for r in records])
    assert "Wuhan" not in dumped and "January" not in dumped


def test_generic_manifest_reports_bad_lines_and_keeps_going(tmp_path):
    root = tmp_path / "mine"
    image_files.png(root / "a.png")
    lines = [json.dumps({"image": "a.png", "text": "Lungs clear.", "modality": "xray",
                         "body_part": "chest"}),
             "{not json", json.dumps({"lang": "en"}),
             json.dumps({"text": "指南：肺结节随访。", "kind": "guideline", "lang": "zh"})]
    (root / "manifest.jsonl").write_text("\n".join(lines), encoding="utf-8")
    _, records, problems = read(root)
    assert sorted(r.kind for r in records) == ["guideline", "image", "report"]
    assert next(r for r in records if r.kind == "image").domain == "chest-xray"
    assert [p.path for p in problems] == ["manifest.jsonl:2", "manifest.jsonl:3"]


def test_generic_sidecars(tmp_path):
    root = tmp_path / "side"
    image_files.png(root / "x" / "1.png")
    (root / "x" / "1.txt").write_text("Small effusion.")
    image_files.png(root / "x" / "2.png", 1)
    (root / "x" / "2.json").write_text(json.dumps({"text": "右肺结节。", "lang": "zh"}))
    image_files.png(root / "x" / "3.png", 2)
    _, records, problems = read(root)
    assert len([r for r in records if r.kind == "image"]) == 3
    assert sorted(r.text for r in records if r.kind == "report") == ["Small effusion.", "右肺结节。"]
    assert not problems


def test_a_generic_text_without_a_lang_is_tagged_with_its_language(tmp_path):
    root = tmp_path / "untagged"
    image_files.png(root / "x" / "1.png")
    (root / "x" / "1.txt").write_text("Small effusion near the 右肺 base.", encoding="utf-8")
    image_files.png(root / "x" / "2.png", 1)
    (root / "x" / "2.txt").write_text("右肺下叶见磨玻璃影，考虑 COVID-19 肺炎。", encoding="utf-8")
    image_files.png(root / "x" / "3.png", 2)
    (root / "x" / "3.json").write_text(json.dumps({"text": "右肺结节。", "lang": "en"}))
    _, records, _ = read(root)
    langs = {r.text: r.lang for r in records if r.kind == "report"}
    assert langs == {"Small effusion near the 右肺 base.": "en",
                     "右肺下叶见磨玻璃影，考虑 COVID-19 肺炎。": "zh",
                     "右肺结节。": "en"}  # a given lang is kept
    assert {r.lang for r in records if r.kind == "image"} == {""}


def test_detection_is_by_content_and_errors_say_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty"):
        open_corpus(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError, match="generic layout"):
        open_corpus(tmp_path / "odd")
    with pytest.raises(CorpusError, match="not found"):
        open_corpus(tmp_path / "nope")
    with pytest.raises(CorpusError, match="unknown corpus format"):
        open_corpus(tmp_path / "odd", "mimic-9")
    parts = tmp_path / "parts"
    layouts.openi_xml(parts / "reports" / "ecgen-radiology" / "1.xml", "CXR1", "Clear.", "Normal.")
    image_files.dicom(parts / "pacs" / "IM1")
    assert open_corpus(parts).formats == ["dicom:pacs", "openi_xml:reports"]


def test_openi_csv_with_bilingual_rewrites_shares_one_study_per_uid(tmp_path):
    root = tmp_path / "iu"
    root.mkdir()
    indiana_reports(root, ["8", "", "", "", "", "", "", ""])
    image_files.png(root / "images" / "7_1.png")
    for lang, text in (("en", "The lungs are clear."), ("zh", "双肺清晰。")):
        (root / f"openi-{lang}.json").write_text(json.dumps({"annotations": [
            {"image_id": "7_1", "caption": text}, {"image_id": "7_2", "caption": text},
            {"image_id": "", "caption": ""}]}, ensure_ascii=False), encoding="utf-8")
    corpus, records, problems = read(root)
    assert corpus.formats == ["openi_csv:."]
    assert {r.study for r in records} == {"openi:CXR7"}
    assert sorted((r.kind, r.lang, r.source) for r in records) == [
        ("image", "", "openi"), ("report", "en", "openi"), ("report", "en", "openi-xrayglm"),
        ("report", "zh", "openi-xrayglm")]
    assert [p.path for p in problems] == ["indiana_reports.csv:3", "openi-en.json:?",
                                          "openi-zh.json:?"]


def test_medquad_both_schemas_as_knowledge_passages(tmp_path):
    root = tmp_path / "kb" / "2_GARD_QA"
    root.mkdir(parents=True)
    (root / "1.xml").write_text(
        '<?xml version="1.0"?><Document id="1" source="GARD" url="http://x"><Focus>ABCD</Focus>'
        '<QAPairs><QAPair pid="1"><Question qid="1-1" qtype="symptoms">What are the symptoms?'
        "</Question><Answer>Deafness and albinism.</Answer></QAPair>"
        '<QAPair pid="2"><Question qid="1-2" qtype="cause">Cause?</Question><Answer/></QAPair>'
        "</QAPairs></Document>")
    (root / "2.xml").write_text(
        '<doc docid="2" corpus="NINDS"><doctitle-focus>Holmes-Adie</doctitle-focus><qaPairs>'
        '<pair pid="1"><question qid="2-1" qtype="information">what is it ?</question>'
        "<answer>A pupil disorder.</answer></pair></qaPairs></doc>")
    (root / "3.xml").write_text("<Document><broken")
    corpus, records, problems = read(tmp_path / "kb")
    assert corpus.formats == ["medquad:."]
    assert sorted(r.text for r in records) == ["What are the symptoms?\nDeafness and albinism.",
                                                "what is it ?\nA pupil disorder."]
    assert all(r.kind == "guideline" and r.license.startswith("CC BY") for r in records)
    assert records[0].meta["qtype"] in ("symptoms", "information")
    assert [p.path for p in problems] == ["2_GARD_QA/3.xml"]


def test_gbk_encoded_cov_ctr_table_reads_the_same(tmp_path):
    root = layouts.covctr(tmp_path / "gbk")
    table = root / "reports.csv"
    table.write_bytes(table.read_text(encoding="utf-8").encode("gbk"))
    _, records, _ = read(root)
    zh = next(r for r in records if r.lang == "zh" and r.study == "covctr:a%0.png")
    assert "磨玻璃影" in zh.text


def test_multi_slice_series_is_indexed_by_representative_slices(tmp_path):
    from pydicom.uid import generate_uid

    root = tmp_path / "ct"
    uid = generate_uid()
    for z in range(12):  # written in shuffled order: the reader sorts by position
        image_files.dicom(root / f"slice{(z * 7) % 12:02d}.dcm", series=uid, z=float((z * 7) % 12))
    image_files.dicom(root / "scout.dcm")
    _, records, problems = read(root)
    series = [r for r in records if r.meta["series_size"] == 12]
    assert [r.meta["slice_index"] for r in series] == [3, 6, 9]
    assert [r.image for r in series] == ["slice03.dcm", "slice06.dcm", "slice09.dcm"]
    assert len({r.meta["series"] for r in series}) == 1
    assert len(records) == 4 and not problems


def test_a_corpus_of_linked_parts_reads_each_part(tmp_path):
    covctr = layouts.covctr(tmp_path / "elsewhere" / "covctr")
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "ct").symlink_to(covctr, target_is_directory=True)
    corpus, records, _ = read(parts)
    assert corpus.formats == ["covctr:ct"] and records
