"""SLAKE question-answer pairs, and multi-frame DICOM objects indexed by a few frames."""

import numpy as np
import pydicom

from corpora.readers.dicom import MAX_SLICES
from rag import pipeline
from rag.images import ImageError, load_image
from rag.types import Query
from tests.fixtures import image_files
from tests.fixtures.layouts import slake
from tests.fixtures.reading import assert_private, read


def test_slake_pairs_are_qa_records_linked_to_their_image(tmp_path):
    corpus, records, problems = read(slake(tmp_path / "slake"))
    assert corpus.formats == ["slake:."]
    qa = {r.meta["question"]: r for r in records if r.kind == "qa"}
    liver = qa["Which organ is abnormal?"]
    assert liver.text == "Question: Which organ is abnormal? Answer: Liver"
    assert (liver.domain, liver.lang, liver.meta["split"]) == ("abdomen-ct", "en", "train")
    assert qa["哪个器官异常?"].text == "问题：哪个器官异常? 答案：肝脏"
    assert qa["Is the lung healthy?"].domain == "chest-xray"
    image = next(r for r in records if r.kind == "image")
    assert image.image == "imgs/xmlab1/source.jpg" and image.study == liver.study
    reasons = {p.path: p.reason for p in problems}
    assert "img_name" in reasons["train.json#2"] and "1 image(s)" in reasons["imgs/"]


def test_slake_index_answers_text_questions_and_never_quotes_them(tmp_path):
    summary = pipeline.index(slake(tmp_path / "slake"), tmp_path / "index", encoder="tiny")
    assert summary.counts["qa"] == {"abdomen-ct": 2, "chest-xray": 1}
    session = pipeline.open_session(tmp_path / "index")
    try:
        hits = pipeline.search(session, Query(text="organ abnormal", to=("qa",), k=2))
        assert hits and all(h.record.kind == "qa" for h in hits)
        answer = pipeline.ask(session, Query(image=str(tmp_path / "slake/imgs/xmlab1/source.jpg"),
                                             to=("image", "report")), "en")
        quoted = [s.text for part in answer.report.sections.values() for s in part]
        assert not any("Question" in text for text in quoted)
    finally:
        session.close()


def multi_frame(path, frames=8):
    image_files.dicom(path)
    ds = pydicom.dcmread(path)
    stack = np.full((frames, 64, 64), 1000, np.uint16)
    for i in range(frames):
        stack[i, 8 * i:8 * i + 8] = 1500  # frame i has a bright band at rows 8i..8i+7
    ds.NumberOfFrames, ds.PixelData = frames, stack.tobytes()
    ds.WindowCenter, ds.WindowWidth = 600, 2000
    ds.save_as(path)
    return path


def test_multi_frame_object_is_indexed_by_representative_frames(tmp_path):
    multi_frame(tmp_path / "export" / "enhanced.dcm")
    image_files.dicom(tmp_path / "export" / "single.dcm")
    _, records, problems = read(tmp_path / "export")
    framed = sorted((r for r in records if "frame" in r.meta), key=lambda r: r.meta["frame"])
    assert [r.meta["frame"] for r in framed] == [2, 4, 6] and len(framed) == MAX_SLICES
    assert len({r.id for r in framed}) == 3 and all(r.meta["series_size"] == 8 for r in framed)
    assert not problems and len(records) == 4
    assert_private(records)
    for rec in framed:  # each record decodes its own frame
        rows = np.asarray(load_image(rec.image_path(), frame=rec.meta["frame"]))[..., 0].mean(1)
        assert int(np.argmax(rows)) // 8 == rec.meta["frame"]
    try:
        load_image(framed[0].image_path(), frame=8)
    except ImageError as err:
        assert "8 frames" in str(err)
    else:
        raise AssertionError("a missing frame must raise ImageError")
