from rag.store import RecordStore
from rag.types import Record


def _records():
    return [
        Record("a:1", "report", "xray", "chest", "chest-xray", "en",
               "Findings: small left pleural effusion. Impression: effusion.", study="s1"),
        Record("a:2", "image", "xray", "chest", "chest-xray", "", image="img/1.png", study="s1",
               root="/corpus"),
        Record("b:1", "report", "ct", "chest", "chest-ct", "zh", "右肺上叶磨玻璃影。", study="s2",
               meta={"sections": {"findings": "右肺上叶磨玻璃影。"}}),
    ]


def test_round_trip_study_links_and_filters(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    rowids = store.add(_records())
    got = store.get(rowids)
    assert [got[i].id for i in rowids] == ["a:1", "a:2", "b:1"]
    assert got[rowids[2]].meta["sections"]["findings"] == "右肺上叶磨玻璃影。"
    assert str(got[rowids[1]].image_path()) == "/corpus/img/1.png"
    assert [r.id for r in store.by_study("s1", "report")] == ["a:1"]
    assert store.ids_where("report", {"lang": "zh"}) == [rowids[2]]
    assert store.ids_where("report", {"domain": "chest-xray"}) == [rowids[0]]
    assert store.counts() == {"report": {"chest-xray": 1, "chest-ct": 1},
                              "image": {"chest-xray": 1}}
    store.close()
    ro = RecordStore(tmp_path / "r.sqlite", readonly=True)
    assert len(ro) == 3


def test_lexical_search_finds_english_and_chinese(tmp_path):
    store = RecordStore(tmp_path / "r.sqlite")
    rowids = store.add(_records())
    assert store.lexical("pleural effusion", "report", 5)[0][0] == rowids[0]
    assert store.lexical("磨玻璃影", "report", 5)[0][0] == rowids[2]
    assert store.lexical("pleural", "image", 5) == []
    assert store.lexical("pleural", "report", 5, allowed={rowids[2]}) == []


def test_unknown_filter_is_refused(tmp_path):
    import pytest

    store = RecordStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="cannot filter"):
        store.ids_where("report", {"patient": "x"})
