"""Stage-1 head training on a seeded synthetic corpus with the tiny encoder."""
import json

import numpy as np
import pytest

from rag.encoders.base import CONFIG_DIR, create_encoder
from rag.training.encoder import TrainConfig, collect_pairs, train_heads
from tests.fixtures.tiny_corpus import make_corpus


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    corpus = make_corpus(root / "corpus", n_per_class=30, bad_image=True)
    result = train_heads("tiny", [corpus], root / "heads" / "tiny.pt", root / "run",
                         TrainConfig(epochs=15, batch_size=32, weight_decay=0.05,
                                     test_fraction=0.2, val_fraction=0.2))
    return root, corpus, result


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


def test_training_writes_curves_checkpoint_and_counts_bilingual_pairs(trained):
    root, _, result = trained
    assert (root / "run" / "train_curves.png").stat().st_size > 1000
    assert (root / "run" / "checkpoint.pt").exists()
    # make_corpus gives every image an English and a Chinese report: both are positives
    assert result.counts["bilingual_train"] > 0 and result.bilingual_trained["n"] > 0
    assert json.loads((root / "heads" / "tiny.json").read_text())["test_zh_to_en_report"]


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_per_class=8, bad_image=False)
    cfg = TrainConfig(epochs=3, batch_size=16, test_fraction=0.2, val_fraction=0.2)
    first = train_heads("tiny", [corpus], tmp_path / "a.pt", tmp_path / "run", cfg)
    log = (tmp_path / "run" / "train_log.jsonl").read_text()
    # the same run again: every epoch is in the checkpoint, so none is trained twice
    again = train_heads("tiny", [corpus], tmp_path / "b.pt", tmp_path / "run", cfg)
    assert (tmp_path / "run" / "train_log.jsonl").read_text() == log
    assert [r["loss"] for r in again.history] == [r["loss"] for r in first.history]
    assert again.test_trained == first.test_trained
    # another setting is another run: it starts over
    other = TrainConfig(epochs=2, batch_size=16, test_fraction=0.2, val_fraction=0.2)
    assert len(train_heads("tiny", [corpus], tmp_path / "c.pt", tmp_path / "run",
                           other).history) == 2


def test_a_domain_probe_is_trained_saved_and_used_for_routing(tmp_path):
    from rag.encoders.domain_probe import DomainProbe, probe_path

    corpus = make_corpus(tmp_path / "corpus", n_per_class=12, bad_image=False)
    manifest = corpus / "manifest.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    for line in lines:  # class 2 becomes another domain
        if line["study"].startswith("c2"):
            line["domain"] = "head-mr"
    manifest.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    heads = tmp_path / "heads" / "tiny.pt"
    result = train_heads("tiny", [corpus], heads, tmp_path / "run",
                         TrainConfig(epochs=8, batch_size=16, test_fraction=0.25,
                                     val_fraction=0.2, weight_decay=0.05))
    probe = DomainProbe.load(probe_path(heads))
    assert probe.classes == ["chest-xray", "head-mr"]
    assert result.domain_accuracy["test"] >= 0.9  # the bright band is easy to tell apart
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    config["heads"] = str(heads)
    (tmp_path / "trained.json").write_text(json.dumps(config))
    encoder = create_encoder(tmp_path / "trained.json")
    assert encoder.domain_probe is not None and encoder.domain_probe.classes == probe.classes


def test_the_lexical_channel_learns_to_match_terms_across_languages():
    import torch
    from open_clip.loss import ClipLoss

    from rag.encoders.towers import ProjectionHeads
    from rag.training.encoder import _ranked

    sides = [("左侧", "left"), ("右侧", "right"), ("双侧", "bilateral")]
    findings = [("胸腔积液", "pleural effusion"), ("气胸", "pneumothorax"),
                ("磨玻璃影", "ground glass opacity"), ("实变", "consolidation"),
                ("结节", "nodule")]
    zh = [f"{s}{f}。" for s, _ in sides for f, _ in findings]
    en = [f"{s} {f}." for _, s in sides for _, f in findings]
    heads = ProjectionHeads(4, 4, 16, 8, lexical_buckets=4096)
    zeros = torch.zeros(len(zh), 4)  # no backbone signal: only the terms can match

    def recall():
        with torch.no_grad():
            q = torch.nn.functional.normalize(heads.embed_texts(zeros, zh), dim=-1)
            g = torch.nn.functional.normalize(heads.embed_texts(zeros, en), dim=-1)
        return _ranked((q @ g.T).numpy(), (1,))["R@1"]

    assert recall() == 0.0  # all texts alike at the start: every tie counts against
    torch.manual_seed(0)
    optim = torch.optim.Adam(heads.parameters(), lr=0.05)
    for _ in range(60):
        q = torch.nn.functional.normalize(heads.embed_texts(zeros, zh), dim=-1)
        g = torch.nn.functional.normalize(heads.embed_texts(zeros, en), dim=-1)
        loss = ClipLoss()(q, g, torch.tensor(20.0))
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert recall() == 1.0


def test_unfrozen_backbone_stages_are_trained_saved_and_used_by_the_encoder(tmp_path):
    import torch

    from rag.encoders.towers import TAIL_STAGES
    from rag.images import load_image
    from rag.training.encoder import _load_init

    corpus = make_corpus(tmp_path / "corpus", n_per_class=10, bad_image=True)
    heads = tmp_path / "heads" / "tiny.pt"
    result = train_heads("tiny", [corpus], heads, tmp_path / "run",
                         TrainConfig(epochs=4, batch_size=16, test_fraction=0.2,
                                     val_fraction=0.2, unfreeze=2, backbone_lr=1e-2))
    assert list((tmp_path / "run" / "cache").glob("maps-*.npy"))  # the tail's input, cached
    state = torch.load(heads, weights_only=True)
    assert int(state[TAIL_STAGES]) == 2
    frozen = create_encoder("tiny")
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    config["heads"] = str(heads)
    (tmp_path / "trained.json").write_text(json.dumps(config))
    tuned = create_encoder(tmp_path / "trained.json")
    # the last two conv stages moved; the first did not; the encoder computes with them
    before, after = frozen.image_backbone.net, tuned.image_backbone.net
    assert torch.equal(before[0].weight, after[0].weight)
    assert not torch.allclose(before[4].weight, after[4].weight, atol=1e-4)
    image = [load_image(corpus / "img" / "c0_1.png")]
    assert np.abs(tuned.image_features(image) - frozen.image_features(image)).max() > 1e-3
    assert result.test_trained["n"] > 0
    # heads trained on tuned stages are not silently put on frozen ones
    with pytest.raises(ValueError, match="--unfreeze 2"):
        _load_init(frozen.heads, heads)
    # frozen-backbone heads may start an unfrozen run: its stages start from the backbone
    plain = tmp_path / "plain.pt"
    torch.save(frozen.heads.state_dict(), plain)
    train_heads("tiny", [corpus], tmp_path / "tuned.pt", tmp_path / "run2",
                TrainConfig(epochs=1, batch_size=16, test_fraction=0.2, val_fraction=0.2,
                            unfreeze=1, init=str(plain)))


def test_unfreezing_more_stages_than_the_backbone_has_is_refused(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_per_class=3, bad_image=False)
    with pytest.raises(ValueError, match="--unfreeze must be 1 to 2"):
        train_heads("tiny", [corpus], tmp_path / "h.pt", tmp_path / "run",
                    TrainConfig(epochs=1, unfreeze=3))


def test_a_backbone_split_computes_the_same_features():
    import torch
    from PIL import Image

    from rag.encoders.backbones import IMAGE_BACKBONES

    backbone = IMAGE_BACKBONES["tiny-cnn"]()
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (70, 90, 3), np.uint8))
              for i in range(3)]
    for stages in (1, 2):
        trunk, tail = backbone.split(stages)
        with torch.no_grad():
            split = tail(backbone.trunk_maps(trunk, images)).numpy()
        np.testing.assert_allclose(split, backbone(images), atol=1e-6)


def test_a_training_fraction_keeps_whole_groups_and_trains_on_fewer_pairs(tmp_path):
    from rag.training.encoder import share_of_groups

    groups = ["p1", "p1", "p2", "p3", "p3", "p3", "p4"]
    rows = np.arange(len(groups))
    half = share_of_groups(rows, groups, 0.5, seed=0)
    kept = {groups[i] for i in half}
    assert len(kept) == 2 and all(groups[i] not in kept for i in set(rows) - set(half))
    assert share_of_groups(rows, groups, 0.5, seed=0).tolist() == half.tolist()  # seeded
    assert len({groups[i] for i in share_of_groups(rows, groups, 0.01, seed=0)}) == 1
    with pytest.raises(ValueError, match="fraction"):
        share_of_groups(rows, groups, 0.0, seed=0)
    corpus = make_corpus(tmp_path / "corpus", n_per_class=8, bad_image=False)
    cfg = TrainConfig(epochs=1, batch_size=16, test_fraction=0.2, val_fraction=0.2)
    whole = train_heads("tiny", [corpus], tmp_path / "a.pt", tmp_path / "run", cfg)
    part = train_heads("tiny", [corpus], tmp_path / "b.pt", tmp_path / "run",
                       TrainConfig(**{**cfg.__dict__, "train_fraction": 0.5}))
    assert 0 < part.counts["train"] < whole.counts["train"]
    assert part.counts["test"] == whole.counts["test"]
