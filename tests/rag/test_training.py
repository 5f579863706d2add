"""Stage-1 head training on a seeded synthetic corpus with the tiny encoder."""
import json

import numpy as np
import pytest

from rag.encoder import CONFIG_DIR, create_encoder
from rag.training import TrainConfig, collect_pairs, split_of, train_heads
from tests.test_pipeline import make_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus = make_corpus(root / "corpus", n_per_class=30, bad_image=True)
    result = train_heads("tiny", [corpus], root / "heads" / "tiny.pt", root / "run",
                         TrainConfig(epochs=15, batch_size=32, weight_decay=0.05,
                                     test_fraction=0.2, val_fraction=0.2))
    return root, corpus, result


def test_split_is_by_group_and_stable():
    cfg = TrainConfig()
    assert split_of("patient-1", cfg) == split_of("patient-1", cfg)
    splits = {split_of(f"g{i}", cfg) for i in range(200)}
    assert splits == {"train", "val", "test"}


def test_pairs_join_each_image_with_every_report_of_its_study(tmp_path):
    corpus = make_corpus(tmp_path / "c", n_per_class=2, bad_image=False)
    pairs, formats = collect_pairs([corpus], TrainConfig())
    assert formats == [f"{corpus}:generic:."] and len(pairs) == 6
    assert all(len(p.texts) == 2 for p in pairs)  # English and Chinese report


def test_training_lowers_the_loss_and_beats_untrained_heads(trained):
    root, _, result = trained
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.8
    assert result.test_trained["MRR"] > result.test_untrained["MRR"]
    assert result.counts["train"] > result.counts["test"] > 0
    log = (root / "run" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 15 and "R@10" in json.loads(log[0])["val"]


def test_heads_and_manifest_are_written_and_loadable(trained, tmp_path):
    root, _, result = trained
    manifest = json.loads((root / "heads" / "tiny.json").read_text())
    assert manifest["sha256"] and manifest["data"]["pairs"] == result.counts["pairs"]
    assert manifest["test_image_to_report"]["trained"] == result.test_trained
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    config["heads"] = str(root / "heads" / "tiny.pt")
    (tmp_path / "trained.json").write_text(json.dumps(config))
    encoder = create_encoder(tmp_path / "trained.json")
    assert encoder.fingerprint != create_encoder("tiny").fingerprint
    vec = encoder.encode_texts(["Large right pleural effusion."])
    np.testing.assert_allclose(np.linalg.norm(vec), 1, atol=1e-5)
