"""The train / val / test split: by patient or case group, stable across runs and releases."""
from corpora.splits import group_of, split_of, split_records
from rag.types import Record


def test_split_is_by_group_and_stable():
    assert split_of("patient-1") == split_of("patient-1")
    splits = {split_of(f"g{i}") for i in range(200)}
    assert splits == {"train", "val", "test"}


def test_known_groups_keep_their_split():
    # pinned from rag.training.encoder.split_of before the move: a changed split would put
    # trained-on patients into the test set of every earlier run
    assert {g: split_of(g) for g in ("openi:CXR1", "openi:CXR2", "cov-ctr:7", "g2", "g5", "g7")} \
        == {"openi:CXR1": "val", "openi:CXR2": "train", "cov-ctr:7": "train", "g2": "test",
            "g5": "val", "g7": "test"}
    assert [split_of(f"g{i}", val_fraction=0.2, test_fraction=0.2) for i in range(6)] \
        == ["train", "val", "test", "train", "train", "test"]


def test_records_split_by_their_group_not_by_image():
    first = Record(id="a", kind="image", source="openi", study="CXR1", image="a.png")
    second = Record(id="b", kind="image", source="openi", study="CXR1", image="b.png")
    grouped = Record(id="c", kind="report", source="openi", study="other", text="x",
                     meta={"split_group": "CXR1"})
    assert group_of(grouped) == group_of(first) == "openi:CXR1"
    assert split_records([first, second, grouped]) == {"a": "val", "b": "val", "c": "val"}
