"""The domain probe: its file format (versions, checks) and how it is trained."""
import json

import numpy as np
import pytest
import torch

from rag.encoders.domain_probe import FORMAT_VERSION, DomainProbe, probe_path, train_probe
from rag.encoders.base import CONFIG_DIR, EncoderError, create_encoder
from rag.encoders.towers import ProjectionHeads


def _probe(dim: int = 3) -> DomainProbe:
    rng = np.random.default_rng(0)
    return DomainProbe(["chest-ct", "head-mr"], rng.standard_normal((2, dim)).astype(np.float32),
                       np.array([0.5, -0.5], np.float32), {"val_accuracy": 0.9})


def test_a_saved_probe_names_its_version_input_and_dim_and_loads_back(tmp_path):
    probe, path = _probe(), tmp_path / "heads.domains.json"
    probe.save(path)
    data = json.loads(path.read_text())
    assert (data["version"], data["input"], data["dim"]) == (FORMAT_VERSION, "image-embedding", 3)
    loaded = DomainProbe.load(path, dim=3)
    assert loaded.classes == probe.classes and loaded.info == probe.info
    vectors = np.eye(3, dtype=np.float32)
    np.testing.assert_allclose(loaded.probabilities(vectors), probe.probabilities(vectors),
                               atol=1e-5)


def test_a_version_1_file_without_version_still_loads(tmp_path):
    path = tmp_path / "old.domains.json"
    path.write_text(json.dumps({"classes": ["a-ct", "b-mr"], "weight": [[1, 0], [0, 1]],
                                "bias": [0, 0], "info": {"weight_decay": 1e-4}}))
    probe = DomainProbe.load(path, dim=2)
    assert probe.predict(np.array([[0.0, 1.0]], np.float32)) == ["b-mr"]


@pytest.mark.parametrize(("change", "message"), [
    ({"version": FORMAT_VERSION + 1}, "newer"),
    ({"input": "backbone-features"}, "backbone-features"),
])
def test_a_file_this_version_cannot_read_is_refused_with_the_reason(tmp_path, change, message):
    path = tmp_path / "p.domains.json"
    _probe().save(path)
    path.write_text(json.dumps(json.loads(path.read_text()) | change))
    with pytest.raises(ValueError, match=message):
        DomainProbe.load(path)


def test_an_encoder_refuses_a_probe_of_another_dim(tmp_path):
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    heads = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(ProjectionHeads(48, 64, config["dim"], config["hidden"]).state_dict(), heads)
    (tmp_path / "tiny.json").write_text(json.dumps(config | {"heads": str(heads)}))
    _probe(dim=config["dim"]).save(probe_path(heads))
    assert create_encoder(tmp_path / "tiny.json").domain_probe.classes == ["chest-ct", "head-mr"]
    _probe(dim=config["dim"] + 1).save(probe_path(heads))
    with pytest.raises(EncoderError, match="33-d vectors"):
        create_encoder(tmp_path / "tiny.json")


def _overlapping(minority_share_in_val: float, seed: int = 0):
    """Two overlapping 1-d Gaussians (means -1, +1), nine majority images to one in train;
    validation holds the minority class at `minority_share_in_val`."""
    rng = np.random.default_rng(seed)
    n_val = 400
    sizes = {"train": (900, 100), "val": (round(n_val * (1 - minority_share_in_val)),
                                          round(n_val * minority_share_in_val))}
    vectors, labels, rows = [], [], {}
    for split, (major, minor) in sizes.items():
        start = len(labels)
        vectors += [rng.normal(-1, 1, (major, 1)), rng.normal(1, 1, (minor, 1))]
        labels += ["chest-ct"] * major + ["head-mr"] * minor
        rows[split] = np.arange(start, len(labels))
    return np.concatenate(vectors).astype(np.float32), labels, rows


@pytest.mark.parametrize(("minority_share_in_val", "expected"), [(0.1, "none"),
                                                                 (0.5, "balanced")])
def test_the_class_weighting_is_picked_on_validation(minority_share_in_val, expected):
    # with the classes as rare in validation as in training, weighting the rare one up costs
    # more errors on the common one than it saves; with balanced validation it pays
    vectors, labels, rows = _overlapping(minority_share_in_val)
    probe = train_probe(vectors, labels, rows["train"], rows["val"])
    assert probe.info["class_weighting"] == expected
    assert probe.info["val_accuracy"] == pytest.approx(
        probe.accuracy(vectors[rows["val"]], [labels[i] for i in rows["val"]]), abs=1e-4)


def test_unknown_and_empty_labels_are_not_classes():
    vectors, labels, rows = _overlapping(0.1)
    labels = [("unknown-ct" if i % 7 == 0 else "") if i % 5 == 0 else label
              for i, label in enumerate(labels)]
    probe = train_probe(vectors, labels, rows["train"], rows["val"])
    assert probe.classes == ["chest-ct", "head-mr"]
    assert sum(probe.info["per_class_train"].values()) == sum(
        1 for i in rows["train"] if labels[i] in probe.classes)
