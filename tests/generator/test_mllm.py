"""The MLLM (image feature map -> projector -> Qwen2 + LoRA) with a tiny random-weight Qwen2 and
the tiny CNN: examples without leakage, the two training stages, checkpoint resume, shipping,
and the `mllm` generator behind the shared interface. The shipped weights are checked
against their manifest; the real 0.5B model runs once when its packages are installed."""
import json

import pytest
import torch
from PIL import Image

from generator.evidence import Case, has_cjk
from generator.mllm.model import IGNORE, IMAGE_MARK, Projector, build_model, load_variant
from rag.training.mllm_data import Example, cited_answer, save_examples
from rag.training.mllm import MLLMTrainConfig, fit_answer, train_mllm
from rag.types import Hit, Query, Record
from tests.fixtures.tiny_vlm import build_qwen2_lm


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    root = tmp_path_factory.mktemp("mllm")
    llm = build_qwen2_lm(root / "llm")
    spec = {"name": "tiny", "llm_path": str(llm), "image_backbone": "tiny-cnn", "image_size": 64,
            "projector": {"type": "pool", "grid": 2, "hidden": 32},
            "lora": {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
            "cases": 2, "case_words": 30, "answer_tokens": 48}
    path = root / "tiny.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("mllm_images")
    paths = []
    for i in range(4):
        path = root / f"im{i}.png"
        Image.new("RGB", (64, 64), (40 * i, 90, 200 - 40 * i)).save(path)
        paths.append(str(path))
    return paths


def _examples(images):
    answers = ["Findings:\nNo pleural effusion. [1]\nImpression:\nNormal chest. [2]",
               "影像表现：\n右肺下叶见磨玻璃影。 [1]\n诊断意见：\n病毒性肺炎。"]
    return [Example("fixture", image, f"s{i}", "en" if i % 2 == 0 else "zh",
                    [(1, "The lungs are clear."), (2, "No pleural effusion.")],
                    answers[i % 2], shuffled=i == 3) for i, image in enumerate(images * 2)]


def test_projectors_turn_a_feature_map_into_llm_tokens():
    fmap = torch.randn(2, 48, 7, 7)
    assert Projector("mlp", 48, 32, 64)(fmap).shape == (2, 49, 32)  # every cell a token
    assert Projector("pool", 48, 32, 64, grid=4)(fmap).shape == (2, 16, 32)
    with pytest.raises(ValueError, match="projector"):
        Projector("attention", 48, 32, 64)


def test_variants_are_data_and_unknown_ones_are_refused():
    for name in ("qwen0.5b-pool", "qwen0.5b-mlp", "qwen1.5b-pool"):
        spec = load_variant(name)
        assert spec["name"] == name and spec["projector"]["type"] in ("mlp", "pool")
    with pytest.raises(ValueError, match="qwen0.5b-pool"):
        load_variant("nope")


def test_only_the_answer_is_learned_and_image_tokens_sit_at_the_mark(variant, images):
    model = build_model(load_variant(variant))
    fmap = model.feature_maps([Image.open(images[0])])[0]
    prompt = model.chat_text(f"Image: {IMAGE_MARK}\nWrite the findings.")
    embeds, labels = model.embed(prompt, fmap, "Findings:\nClear lungs. [1]")
    assert embeds.shape[:2] == labels.shape and embeds.shape[2] == 32
    learned = labels[0][labels[0] != IGNORE].tolist()
    assert learned[-1] == model.end_id
    assert model.tokenizer.decode(learned[:-1]) == "Findings:\nClear lungs. [1]"
    head = len(model._ids(prompt.split(IMAGE_MARK)[0]))
    image = model.projector(fmap.unsqueeze(0))[0]
    assert torch.allclose(embeds[0, head:head + 4], image)  # 2x2 pooled grid, right after the text
    with pytest.raises(ValueError, match="exactly once"):
        model.embed("no mark here", fmap)


def test_reference_answers_cite_only_cases_that_state_the_same(tmp_path):
    report = Record(id="r0", kind="report", lang="en", study="s0",
                    text="Findings: Small left pleural effusion. Heart size is normal.",
                    meta={"sections": {"findings": "Small left pleural effusion. Heart size is "
                                                   "normal."}})
    agrees = Record(id="r1", kind="report", lang="en", study="s1", text="Heart size is normal.")
    denies = Record(id="r2", kind="report", lang="en", study="s2",
                    text="No left pleural effusion. Small pleural effusion absent.")
    answer = cited_answer(report, [Case(1, agrees, 0.9), Case(2, denies, 0.8)], "en")
    lines = answer.splitlines()
    assert lines[0] == "Findings:"
    assert lines[1] == "Small left pleural effusion."  # case 2 says the opposite: not cited
    assert lines[2] == "Heart size is normal. [1]"


def test_long_answers_keep_the_impression_and_whole_lines():
    answer = "Findings:\n" + "\n".join(f"Finding number {i} here." for i in range(30)) + \
             "\nImpression:\nFemoral neck fracture. [2]"
    fitted = fit_answer(answer, 40, lambda text: len(text.split()))
    assert fitted.endswith("Impression:\nFemoral neck fracture. [2]")
    assert len(fitted.split()) <= 44 and "Finding number 0 here." in fitted


def test_two_stages_train_resume_from_a_checkpoint_and_ship(variant, images, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    save_examples(_examples(images), run_dir / "examples.jsonl")
    cfg = MLLMTrainConfig(variant=str(variant), steps_projector=3, steps_lora=3, accumulate=2,
                          val_examples=2, val_every=3, save_every=2, lr_projector=1e-2,
                          lr_lora=1e-2)
    first = MLLMTrainConfig(**{**cfg.__dict__, "steps_lora": 1})  # "crashes" after step 4
    train_mllm(first, out, run_dir)
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state == {**state, "step": 4, "stage": "2b"}
    assert (run_dir / "checkpoint" / "adapter" / "adapter_model.safetensors").exists()
    result = train_mllm(cfg, out, run_dir)  # resumes at step 5
    steps = [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").open()]
    assert steps == [1, 2, 3, 4, 5, 6] and result["steps"] == 6 and result["stage"] == "2b"
    assert (run_dir / "train_curves.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["counts"] == {"fixture:en": 4, "fixture:zh": 3, "fixture:zh:shuffled": 1}
    assert set(manifest["files"]) == {"projector.pt", "adapter/adapter_config.json",
                                      "adapter/adapter_model.safetensors"}
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] is None  # no machine's folder in a shipped adapter
    # the shipped projector is the trained one (float16), not the initial one
    trained = torch.load(out / "projector.pt", weights_only=True)
    fresh = build_model(load_variant(variant)).projector.state_dict()
    assert any(not torch.allclose(trained[k].float(), fresh[k], atol=1e-3) for k in fresh)


def test_init_fine_tunes_trained_weights_on_new_examples(variant, images, tmp_path):
    first_out, out = tmp_path / "first", tmp_path / "out"
    save_examples(_examples(images), tmp_path / "run1" / "examples.jsonl")
    cfg = MLLMTrainConfig(variant=str(variant), steps_projector=1, steps_lora=2,
                          val_examples=2, lr_lora=1e-2)
    train_mllm(cfg, first_out, tmp_path / "run1")
    save_examples(_examples(images)[:5], tmp_path / "run2" / "examples.jsonl")
    result = train_mllm(MLLMTrainConfig(**{**cfg.__dict__, "init": str(first_out)}), out,
                        tmp_path / "run2")
    rows = [json.loads(line) for line in (tmp_path / "run2" / "train_log.jsonl").open()]
    assert [r["stage"] for r in rows] == ["2b", "2b"] and result["steps"] == 2  # no stage 2a
    manifest = json.loads((out / "manifest.json").read_text())
    first = json.loads((first_out / "manifest.json").read_text())
    assert manifest["init"]["files"] == first["files"]  # the lineage is kept
    started = torch.load(first_out / "projector.pt", weights_only=True)
    tuned = torch.load(out / "projector.pt", weights_only=True)
    assert any(not torch.equal(started[k], tuned[k]) for k in started)
    other = json.loads(variant.read_text())
    other["projector"] = {"type": "mlp", "hidden": 32}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="differs .* in projector"):
        train_mllm(MLLMTrainConfig(**{**cfg.__dict__, "variant": str(tmp_path / "other.json"),
                                      "init": str(first_out)}), out, tmp_path / "run3")
    with pytest.raises(FileNotFoundError, match="no trained MLLM weights"):
        train_mllm(MLLMTrainConfig(**{**cfg.__dict__, "init": str(tmp_path)}), out,
                   tmp_path / "run2", resume=False)


def _hits():
    rec = [Record(id=f"r{i}", kind="report", lang="en", study=f"s{i}", text=text)
           for i, text in enumerate(["No pleural effusion.", "The lungs are clear."])]
    return [Hit(record=r, score=0.9 - 0.1 * i, rank=i + 1, backend="faiss") for i, r in enumerate(rec)]


@pytest.mark.slow
def test_the_mllm_generator_writes_a_report_with_its_trained_weights(variant, images, tmp_path):
    from generator.base import create_generator

    run_dir, out = tmp_path / "run", tmp_path / "out"
    save_examples(_examples(images), run_dir / "examples.jsonl")
    train_mllm(MLLMTrainConfig(variant=str(variant), steps_projector=1, steps_lora=1,
                               val_examples=2), out, run_dir)
    generator = create_generator("mllm", model=str(out), max_tokens=12)
    report = generator.generate(_hits(), Query(image=images[0], lang="en"), "en")
    assert report.model == "mllm:out" and report.seconds > 0
    assert report.sentences() or report.warnings  # a random tiny LLM: text is noise
    no_image = generator.generate(_hits(), Query(text="effusion?", lang="en"), "en")
    assert not no_image.sentences() and any("--image" in w for w in no_image.warnings)
    none = generator.generate([], Query(image=images[0], lang="zh"), "zh")
    assert none.warnings and not none.sentences()


def test_a_looping_answer_is_stopped_and_kept_once(variant, images):
    from generator.loops import LOOP, loop_period

    model = build_model(load_variant(variant), None, trainable=False)
    fmap = model.feature_maps([Image.open(images[0]).convert("RGB")])[0]
    prompt = model.chat_text(f"Describe {IMAGE_MARK}")
    text, cut = model.generate(prompt, fmap, max_new_tokens=200)  # random weights loop at once
    assert cut == LOOP
    assert loop_period(model.tokenizer(text)["input_ids"]) is None


def test_missing_weights_say_how_to_train_them(tmp_path):
    from generator.base import create_generator

    generator = create_generator("mllm", model=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train mllm"):
        generator.generate(_hits(), Query(text="effusion?", lang="en"), "en")


def test_shipped_weights_match_their_manifest():
    from generator.gguf import model_specs
    from generator.mllm.model import WEIGHTS_DIR
    from rag.manifest import file_sha256

    shipped = sorted(WEIGHTS_DIR.glob("*/manifest.json"))
    assert shipped, "no trained MLLM weights are shipped"
    for path in shipped:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for name, sha in manifest["files"].items():
            assert file_sha256(path.parent / name) == sha, name
        base = manifest["base_model"]
        assert base["sha256"] == model_specs()[base["name"]]["sha256"]
        assert manifest["training"]["steps"] > 0 and manifest["data"]["examples"] > 0


def _packaged(name):
    from generator.gguf import packaged_gguf

    try:
        return packaged_gguf(name)
    except (FileNotFoundError, ValueError) as err:
        pytest.skip(f"the packaged {name} model is not installed: {err}")


@pytest.mark.slow
def test_the_shipped_mllm_writes_a_cited_chinese_report_with_the_real_model(images):
    _packaged("qwen2.5-0.5b")
    from generator.base import create_generator

    zh = [Record(id=f"z{i}", kind="report", lang="zh", study=f"s{i}", text=text) for i, text in
          enumerate(["影像表现：双肺纹理清晰，右肺下叶见磨玻璃影。诊断意见：右肺下叶炎性病变。",
                     "影像表现：双肺纹理增多，左肺上叶见斑片影。诊断意见：左肺上叶炎性病变。"])]
    hits = [Hit(record=r, score=0.9 - 0.1 * i, rank=i + 1, backend="faiss") for i, r in enumerate(zh)]
    generator = create_generator("mllm", max_tokens=80, max_seconds=120)
    report = generator.generate(hits, Query(image=images[0], lang="zh"), "zh")
    assert report.sentences(), report.warnings
    assert any(s.cites for s in report.sentences()) and has_cjk(report.text())


def test_a_dequantized_gguf_is_reused_only_while_the_file_is_unchanged(tmp_path, monkeypatch):
    import os

    from generator.mllm.model import _conversion_dir, _converted

    monkeypatch.setenv("CASELENS_MODELS", str(tmp_path / "models"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    folder, stamp = _conversion_dir(gguf)
    assert folder.parent == tmp_path / "models" and _converted(gguf) is None
    folder.mkdir(parents=True)
    (folder / "source.txt").write_text(stamp, encoding="utf-8")
    assert _converted(gguf) == folder
    os.utime(gguf, ns=(1, 1))  # a replaced model file: converted again, never a stale copy
    assert _converted(gguf) is None
