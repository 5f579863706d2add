"""The vlm generator over tiny random-weight Qwen2-VL and LLaVA models built offline: the answers
are gibberish, so these tests check the code path (prompting, image and text-only queries,
bounds, loading errors) and, with a fixed answer, the citations."""
from __future__ import annotations

import logging

import pytest
from PIL import Image

from generator.base import create_generator
from generator.vlm import MAX_IMAGE_SIDE, VisionLanguageGenerator, query_image
from rag.types import Hit, Query, Record, Report
from tests.fixtures.tiny_vlm import build_llava, build_qwen2_vl

# read_report finds headings at the start of a line, as models write them
ANSWER = ("Findings: Ground glass opacity in the right lower lobe [1].\n"
          "Impression: Viral pneumonia [1][2].")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {"qwen2-vl": str(build_qwen2_vl(root / "tiny-qwen2-vl")),
            "llava": str(build_llava(root / "tiny-llava"))}


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "chest.png"
    Image.new("L", (64, 64), 128).save(path)
    return str(path)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CASELENS_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delenv("CASELENS_VLM", raising=False)


def _hits() -> list[Hit]:
    texts = ["Ground glass opacity in the right lower lobe. Impression: viral pneumonia.",
             "Patchy consolidation in the right lower lobe. Impression: pneumonia.",
             "The lungs are clear. Impression: no acute disease."]
    return [Hit(Record(f"r{i}", "report", "ct", "chest", "chest-ct", "en", text, study=f"s{i}"),
                0.9 - i * 0.1, i, "faiss", "image->report", cosine=0.9 - i * 0.1)
            for i, text in enumerate(texts, start=1)]


def _generator(path: str, **options) -> VisionLanguageGenerator:
    return create_generator("vlm", model=path, **options)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen2-vl", "llava"])
@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text-only"])
def test_writes_a_report_from_an_image_or_a_text_query(models, image_path, name, with_image):
    query = (Query(image=image_path, lang="en") if with_image
             else Query(text="ground glass opacity right lower lobe", lang="en"))
    gen = _generator(models[name], max_new_tokens=6)
    report = gen.generate(_hits(), query, "en")
    gen.close()
    assert isinstance(report, Report)
    assert report.lang == "en" and report.model == f"vlm:tiny-{name}"
    assert report.seconds is not None and gen._model is None


def test_token_bound_cuts_the_answer_with_a_warning(models, image_path):
    gen = _generator(models["qwen2-vl"], max_new_tokens=3)
    report = gen.generate(_hits(), Query(image=image_path), "en")
    assert any("cut at 3 tokens" in w and "max_new_tokens=3" in w for w in report.warnings)


def test_time_bound_stops_after_the_first_token(models, image_path):
    gen = _generator(models["qwen2-vl"], max_new_tokens=50, max_seconds=0.0)
    report = gen.generate(_hits(), Query(image=image_path), "en")
    assert any("cut at 1 tokens" in w and "max_seconds=0" in w for w in report.warnings)


def _fixed_answer(gen: VisionLanguageGenerator, monkeypatch, answer: str, seen: dict):
    """Make the loaded model 'write' `answer`: prompt ids + the answer's ids + end of turn."""
    import torch

    gen._load()
    tokenizer = gen._processor.tokenizer

    def generate(input_ids, **kwargs):
        seen["prompt"] = tokenizer.decode(input_ids[0])
        seen["pixels"] = "pixel_values" in kwargs
        written = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        return torch.cat([input_ids, torch.tensor([written])], dim=1)

    monkeypatch.setattr(gen._model, "generate", generate)


def test_citations_map_to_the_records_of_the_numbered_cases(models, image_path, monkeypatch):
    gen = _generator(models["qwen2-vl"])
    seen: dict = {}
    _fixed_answer(gen, monkeypatch, ANSWER, seen)
    report = gen.generate(_hits(), Query(image=image_path), "en")
    assert seen["pixels"] and "<|vision_start|><|image_pad|>" in seen["prompt"]
    assert "<|im_start|>system\nYou are a radiologist" in seen["prompt"]
    assert "[2] (similarity 0.70, chest-ct) Patchy consolidation" in seen["prompt"]
    findings, impression = report.sections["findings"], report.sections["impression"]
    assert findings[0].text == "Ground glass opacity in the right lower lobe."
    assert findings[0].cites == ["r1"]
    assert impression[0].text == "Viral pneumonia." and impression[0].cites == ["r1", "r2"]
    assert report.errors == [] and report.warnings == []  # ended on <|im_end|>: not cut


def test_citing_a_case_that_was_not_retrieved_is_a_report_error(models, image_path, monkeypatch):
    gen = _generator(models["qwen2-vl"], cases=2)
    _fixed_answer(gen, monkeypatch, "Findings: Small effusion [9].\nImpression: Effusion [1].", {})
    report = gen.generate(_hits(), Query(image=image_path), "en")
    assert len(report.errors) == 1 and "[9]" in report.errors[0]
    assert report.sections["findings"][0].cites == []


def test_chinese_report_from_english_cases(models, image_path, monkeypatch):
    gen = _generator(models["qwen2-vl"])
    seen: dict = {}
    _fixed_answer(gen, monkeypatch, "影像表现：右肺下叶见磨玻璃影[1]。\n诊断意见：病毒性肺炎[1][2]。", seen)
    report = gen.generate(_hits(), Query(image=image_path, lang="zh"), "zh")
    assert report.lang == "zh" and "[1]" in seen["prompt"]
    assert report.sections["findings"][0].cites == ["r1"]
    assert report.sections["impression"][0].cites == ["r1", "r2"]


def test_a_template_that_refuses_a_system_turn_gets_it_in_the_user_turn(models):
    import jinja2

    gen = _generator(models["qwen2-vl"])
    gen._load()
    template = gen._processor.chat_template
    gen._processor.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}" + template)
    with pytest.raises(jinja2.TemplateError):  # the template really refuses it
        gen._processor.apply_chat_template([{"role": "system", "content": "x"}], tokenize=False)
    prompt = gen._prompt("SYSTEM RULES", "the cases", has_image=True)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>SYSTEM RULES\n\nthe cases" in prompt


def test_llava_without_chat_template_gets_the_plain_prompt(models, image_path, monkeypatch, caplog):
    gen = _generator(models["llava"])
    seen: dict = {}
    _fixed_answer(gen, monkeypatch, ANSWER, seen)
    with caplog.at_level(logging.INFO, logger="generator.vlm"):
        report = gen.generate(_hits(), Query(image=image_path), "en")
    assert "no chat template" in caplog.text
    assert "USER: <image>" in seen["prompt"] and seen["prompt"].rstrip().endswith("ASSISTANT:")
    assert report.sections["impression"][0].cites == ["r1", "r2"]


def test_an_uploaded_image_is_shrunk_to_bound_image_tokens():
    image = query_image(Image.new("L", (1000, 500), 90))
    assert image.mode == "RGB" and max(image.size) == MAX_IMAGE_SIDE
    assert query_image(None) is None


def test_no_retrieved_report_writes_nothing_and_loads_no_model(models, image_path):
    gen = _generator(models["qwen2-vl"])
    report = gen.generate([], Query(image=image_path), "en")
    assert report.sections == {} and report.warnings and gen._model is None


def test_no_model_named_says_how_to_point_at_one():
    with pytest.raises(ValueError, match="--vlm-path DIR"):
        VisionLanguageGenerator()


def test_model_from_the_environment_unless_a_path_is_given(models, monkeypatch):
    from generator.base import GeneratorOptions, generator_keywords
    from rag.settings import Settings

    monkeypatch.setenv("CASELENS_VLM", models["llava"])
    monkeypatch.setenv("CASELENS_ALLOW_DOWNLOAD", "1")
    from_env = GeneratorOptions(settings=Settings.from_env())
    generator = VisionLanguageGenerator(**generator_keywords("vlm", from_env))
    assert generator.model == models["llava"] and generator.allow_download
    given = GeneratorOptions(vlm_path=models["qwen2-vl"], settings=Settings.from_env())
    assert VisionLanguageGenerator(**generator_keywords("vlm", given)).model == models["qwen2-vl"]
    assert not VisionLanguageGenerator(models["llava"]).allow_download  # no environment read


@pytest.mark.parametrize("model, message", [
    ("/no/such/vlm-folder", "VLM folder not found"),
    ("nobody/no-such-vlm", "neither a local folder nor in the Hugging Face cache"),
])
def test_missing_model_is_one_clear_error(model, message, image_path):
    gen = VisionLanguageGenerator(model)  # lazy: nothing is loaded before the first report
    with pytest.raises(ValueError, match=message):
        gen.generate(_hits(), Query(image=image_path), "en")


def test_a_folder_without_config_is_not_a_model(tmp_path, image_path):
    with pytest.raises(ValueError, match="no config.json"):
        VisionLanguageGenerator(str(tmp_path)).generate(_hits(), Query(image=image_path), "en")
