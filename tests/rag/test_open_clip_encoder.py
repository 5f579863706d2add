"""The open_clip backend, on a tiny architecture with random weights (no download)."""
import json

import numpy as np
import pytest
from PIL import Image

from rag.encoders.base import EncoderError, create_encoder

TINY_ARCH = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _config(tmp_path, **extra):
    (tmp_path / "caselens-tiny-vit.json").write_text(json.dumps(TINY_ARCH))
    cfg = {"name": "oc-tiny", "type": "open_clip", "model": "caselens-tiny-vit",
           "model_config": str(tmp_path / "caselens-tiny-vit.json"), "pretrained": None, **extra}
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps(cfg))
    return path


def test_open_clip_tiny_architecture_encodes_images_and_texts(tmp_path):
    enc = create_encoder(_config(tmp_path))
    img = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype("uint8"))
    assert enc.dim == 16
    vecs = enc.encode_images([img, img])
    txt = enc.encode_texts(["no pneumothorax"])
    assert vecs.shape == (2, 16) and txt.shape == (1, 16)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)


def test_local_weights_file_is_loaded_and_fingerprinted(tmp_path):
    import torch

    enc = create_encoder(_config(tmp_path))
    weights = tmp_path / "weights.pt"
    torch.save(enc.model.state_dict(), weights)
    again = create_encoder(_config(tmp_path, pretrained=str(weights)))
    txt = ["bilateral effusions"]
    np.testing.assert_allclose(enc.encode_texts(txt), again.encode_texts(txt), atol=1e-5)
    assert again.fingerprint != enc.fingerprint


def test_missing_local_weights_is_a_clear_error(tmp_path):
    with pytest.raises(EncoderError, match="not found"):
        create_encoder(_config(tmp_path, pretrained=str(tmp_path / "nope.pt")))


def _no_network(monkeypatch) -> list:
    """Records (and refuses) every connection attempt of the process."""
    import socket

    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *address, **_: refuse(None, address))
    return attempts


@pytest.mark.parametrize("config", [{"model": "RN50", "pretrained": "openai"},
                                    {"model": "hf-hub:caselens-test/not-cached"}])
def test_hub_weights_offline_fail_fast_with_advice(tmp_path, monkeypatch, config):
    import os

    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    attempts = _no_network(monkeypatch)
    path = tmp_path / "hub.json"
    path.write_text(json.dumps({"type": "open_clip", **config}))
    with pytest.raises(EncoderError, match="local path"):
        create_encoder(path)
    assert attempts == []  # resolved from the local caches only: not one connection tried
    assert "HF_HUB_OFFLINE" not in os.environ  # and the process environment is left alone
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_before


def _hf_text_encoder(folder, repo, **text_cfg):
    """An encoder config whose text tower (and tokenizer) is the Hugging Face model `repo`."""
    arch = {**TINY_ARCH, "text_cfg": {"hf_model_name": repo, "hf_tokenizer_name": repo,
                                      "context_length": 16, **text_cfg}}
    (folder / "caselens-hf-text.json").write_text(json.dumps(arch))
    path = folder / "encoder.json"
    path.write_text(json.dumps({"type": "open_clip", "model": "caselens-hf-text",
                                "model_config": "caselens-hf-text.json", "pretrained": None}))
    return path


def test_hugging_face_text_tower_resolves_from_the_cache_only(tmp_path, monkeypatch):
    """An architecture whose text tower is a Hugging Face model (BiomedCLIP's kind): its
    config is read from the local cache, never fetched."""
    path = _hf_text_encoder(tmp_path, "caselens-test/not-cached-bert")
    attempts = _no_network(monkeypatch)
    with pytest.raises(EncoderError, match="text tower 'caselens-test/not-cached-bert'"):
        create_encoder(path)
    assert attempts == []


def _hub_snapshot(cache, repo):
    """The folder of a repo's files laid out as the Hugging Face cache keeps a download."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    return snapshot


def _cached_tiny_bert(cache, repo="caselens-test/tiny-bert"):
    """A tiny BERT (config, weights, tokenizer) in the Hugging Face cache."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    snapshot = _hub_snapshot(cache, repo)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(snapshot)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (snapshot / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(snapshot / "vocab.txt")).save_pretrained(snapshot)
    return repo


def test_cached_hugging_face_text_tower_loads_without_the_network(tmp_path, monkeypatch):
    import os

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = _cached_tiny_bert(tmp_path / "hub")
    path = _hf_text_encoder(tmp_path, repo, hf_pooler_type="mean_pooler",
                            hf_proj_type="linear")
    attempts = _no_network(monkeypatch)
    enc = create_encoder(path)
    assert enc.encode_texts(["bilateral effusions"]).shape == (1, 16)
    assert attempts == [] and "HF_HUB_OFFLINE" not in os.environ


def test_pretrained_tag_weights_are_found_where_open_clip_would_download_them(tmp_path,
                                                                            monkeypatch):
    import huggingface_hub.constants

    from rag.encoders.open_clip import _cached_tag_weights

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hub_snapshot(tmp_path / "hub", "caselens-test/clip")
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"bin")
    tag = {"hf_hub": "caselens-test/clip/"}
    assert _cached_tag_weights(tag) == str(snapshot / "open_clip_pytorch_model.bin")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"safe")  # preferred, as open_clip
    assert _cached_tag_weights(tag) == str(snapshot / "open_clip_model.safetensors")
    assert _cached_tag_weights({"hf_hub": "caselens-test/other/"}) is None


def test_unknown_key_in_the_open_clip_block_is_named(tmp_path):
    path = tmp_path / "towers.json"
    path.write_text(json.dumps({"name": "x", "type": "towers", "image_backbone": "open_clip",
                                "text_backbone": "open_clip", "dim": 8, "heads": None,
                                "open_clip": {"model": "RN50", "pretrain": "openai"}}))
    with pytest.raises(EncoderError, match="'pretrain'"):
        create_encoder(path)


def test_open_clip_towers_train_under_caselens_heads(tmp_path):
    """A towers config over open_clip backbones: the same stage-1 training and evaluation."""
    from rag.training.encoder import TrainConfig, train_heads
    from tests.fixtures.tiny_corpus import make_corpus

    (tmp_path / "caselens-tiny-vit.json").write_text(json.dumps(TINY_ARCH))
    spec = {"model": "caselens-tiny-vit", "model_config": "caselens-tiny-vit.json",
            "pretrained": None}
    config = {"name": "oc-towers", "type": "towers", "image_backbone": "open_clip",
              "text_backbone": "open_clip", "open_clip": spec, "dim": 8, "hidden": 16,
              "heads": None}
    path = tmp_path / "towers.json"
    path.write_text(json.dumps(config))
    corpus = make_corpus(tmp_path / "corpus", n_per_class=6, bad_image=False)
    result = train_heads(str(path), [corpus], tmp_path / "heads" / "oc.pt", tmp_path / "run",
                         TrainConfig(epochs=2, batch_size=8, test_fraction=0.3,
                                     val_fraction=0.2))
    assert result.test_trained["n"] > 0 and len(result.history) == 2
    config["heads"] = str(tmp_path / "heads" / "oc.pt")
    path.write_text(json.dumps(config))
    enc = create_encoder(path)
    vec = enc.encode_images([Image.new("RGB", (40, 40), "white")])
    assert vec.shape == (1, 8) and enc.encode_texts(["no effusion"]).shape == (1, 8)


def test_open_clip_backbone_without_its_block_says_what_to_add(tmp_path):
    path = tmp_path / "towers.json"
    path.write_text(json.dumps({"name": "x", "type": "towers", "image_backbone": "open_clip",
                                "text_backbone": "hash-bag", "dim": 8, "heads": None}))
    from rag.encoders.backbones import BackboneError

    with pytest.raises(BackboneError, match="open_clip"):
        create_encoder(path)
