"""The `llm` generator (generator/llm.py) over a fake llama-cpp model that streams a fixed
answer, and once (`slow`) over the packaged 1.5B GGUF model."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import numpy as np
import pytest

from generator.base import create_generator
from generator.composer import phrases
from generator.llm import LlamaCppGenerator
from generator.support import SupportCheck
from rag.text.words import has_cjk
from rag.types import Query, Record
from tests.fixtures.llm_cases import CASES, hits_of, report

log = logging.getLogger(__name__)

QUERY = Query(image="new-study.png", lang="en")


def chunk(content=None, finish=None, role=None):
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeLlama:
    """What LlamaCppGenerator uses of llama_cpp.Llama: a streamed chat completion, and close."""

    def __init__(self, answer: str, finish: str = "stop", delay: float = 0.0,
                 finish_delay: float = 0.0):
        self.answers = [answer] if isinstance(answer, str) else list(answer)
        self.finish, self.delay, self.finish_delay = finish, delay, finish_delay
        self.calls: list[tuple[list[dict], dict]] = []
        self.sent = 0
        self.stream_closed = self.closed = False

    def create_chat_completion(self, messages, **options):
        self.calls.append((messages, options))
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return self._stream([answer[i:i + 8] for i in range(0, len(answer), 8)])

    def _stream(self, pieces):
        try:
            yield chunk(role="assistant")
            for piece in pieces:
                time.sleep(self.delay)
                self.sent += 1
                yield chunk(piece)
            time.sleep(self.finish_delay)
            yield chunk(finish=self.finish)
        finally:
            self.stream_closed = True

    def close(self):
        self.closed = True

    @property
    def user_prompt(self) -> str:
        return self.calls[-1][0][1]["content"]


def with_fake(answer, finish="stop", delay=0.0, finish_delay=0.0, **options):
    generator = create_generator("llm", **options)
    generator._llama = FakeLlama(answer, finish, delay, finish_delay)
    return generator


ANSWER = ("Findings:\nThe heart is normal in size [1][2].\nSmall left pleural effusion [1, 2].\n"
          "Impression:\nSmall left pleural effusion [2].")


def test_create_generator_builds_the_llm_generator():
    generator = create_generator("llm", max_tokens=50, cases=2)
    assert isinstance(generator, LlamaCppGenerator)
    assert generator.max_tokens == 50 and generator.cases == 2
    assert generator.label == "llm:qwen2.5-1.5b" and generator._llama is None


def test_the_answer_becomes_a_cited_report():
    generator = with_fake(ANSWER)
    out = generator.generate(hits_of(CASES), QUERY, "en")
    assert [(s.text, s.cites) for s in out.sections["findings"]] == [
        ("The heart is normal in size.", ["iu:1", "iu:2"]),
        ("Small left pleural effusion.", ["iu:1", "iu:2"])]
    assert [(s.text, s.cites) for s in out.sections["impression"]] == [
        ("Small left pleural effusion.", ["iu:2"])]
    assert out.model == "llm:qwen2.5-1.5b" and out.lang == "en"
    assert out.warnings == [] and out.errors == [] and out.seconds is not None
    _, options = generator._llama.calls[0]
    assert options["stream"] is True and options["temperature"] == 0.0
    assert options["max_tokens"] == generator.max_tokens


def test_the_prompt_numbers_the_cases_most_similar_first():
    generator = with_fake(ANSWER, cases=2)
    generator.generate(hits_of(CASES), Query(text="left pleural effusion?"), "en")
    messages, _ = generator._llama.calls[0]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "[1]" in messages[0]["content"] and "Impression:" in messages[0]["content"]
    user = messages[1]["content"]
    assert "[1] (similarity 0.90, chest-xray) The heart is normal in size." in user
    assert "[2] (similarity 0.85, chest-xray) Heart size is normal." in user
    assert "[3]" not in user and "The lungs are clear" not in user  # cases=2
    assert "Question: left pleural effusion?" in user
    assert "术语" not in user


def test_chinese_from_english_cases_is_written_in_english_then_translated_with_the_glossary():
    generator = with_fake(["Findings:\nSmall left pleural effusion [1][2].\nImpression:\nEffusion [2].",
                           "1. 左侧少量胸腔积液。\n2. 胸腔积液。"])
    out = generator.generate(hits_of(CASES), QUERY, "zh")
    (draft, _), (translation, _) = generator._llama.calls
    assert "[1] (similarity 0.90, chest-xray) The heart is normal in size." in draft[1]["content"]
    assert "Write the Findings and Impression of the new study in English" in draft[1]["content"]
    assert "术语必须按此翻译" in translation[0]["content"]
    assert "pleural effusion = 胸腔积液" in translation[0]["content"]
    # numbered sentences without their marks: the citations stay with the English sentence
    assert translation[1]["content"] == "1. Small left pleural effusion.\n2. Effusion."
    assert [(s.text, s.cites) for s in out.sentences()] == [
        ("左侧少量胸腔积液。", ["iu:1", "iu:2"]), ("胸腔积液。", ["iu:2"])]


def test_a_sentence_the_translation_skips_stays_in_english_and_is_flagged():
    generator = with_fake(["Findings:\nSmall left pleural effusion [1].\nNo pneumothorax [2].",
                           "1. 左侧少量胸腔积液。"], support=SupportCheck(lambda t: np.ones((len(t), 4))))
    out = generator.generate(hits_of(CASES), QUERY, "zh")
    assert [s.text for s in out.sentences()] == ["左侧少量胸腔积液。", "No pneumothorax."]
    assert "not written in Chinese" in out.sentences()[1].issues


def test_the_chinese_prompt_quotes_a_chinese_report_and_lists_no_terms():
    zh = report("iu:1-zh", "zh", "心影大小正常。左侧少量胸腔积液。", "左侧少量胸腔积液。", "s1")
    generator = with_fake("影像表现：\n左侧少量胸腔积液[1]。", cases=1)
    out = generator.generate(hits_of(CASES, linked={"iu:1": [zh]}), QUERY, "zh")
    user = generator._llama.user_prompt
    assert "[1]（相似度 0.90）心影大小正常。左侧少量胸腔积液。 左侧少量胸腔积液。" in user
    assert "术语请按下表翻译" not in user
    assert out.sections["findings"][0].cites == ["iu:1-zh"]


def test_a_citation_of_an_unlisted_case_is_a_report_error():
    out = with_fake("Findings:\nLarge right pneumothorax [7].").generate(hits_of(CASES), QUERY, "en")
    assert len(out.errors) == 1 and "[7]" in out.errors[0]
    assert out.sections["findings"][0].cites == []


def test_an_answer_cut_at_max_tokens_says_so():
    out = with_fake(ANSWER, finish="length", max_tokens=40).generate(hits_of(CASES), QUERY, "en")
    assert out.warnings == [phrases("en")["cut"].format(limit="40 tokens")]
    assert out.sentences()  # what came before the cut is kept


def test_an_answer_cut_at_max_seconds_says_so_and_stops_the_stream():
    generator = with_fake(ANSWER, delay=0.02, max_seconds=0.05)
    out = generator.generate(hits_of(CASES), QUERY, "zh")
    fake = generator._llama
    assert out.warnings[0] == phrases("zh")["cut"].format(limit="0.05 s")
    assert fake.stream_closed and 0 < fake.sent < len(fake.answers[-1]) // 8
    assert out.seconds < 1.0


def test_an_answer_finishing_in_time_is_not_cut():
    out = with_fake(ANSWER, max_seconds=5).generate(hits_of(CASES), QUERY, "en")
    assert out.warnings == []


def test_an_answer_whose_last_chunk_comes_after_the_deadline_is_complete_not_cut():
    out = with_fake(ANSWER, finish_delay=0.06, max_seconds=0.05).generate(hits_of(CASES), QUERY, "en")
    assert out.warnings == [] and len(out.sentences()) == 3


def test_an_answer_with_no_sentence_warns():
    out = with_fake("Findings:\n[1]").generate(hits_of(CASES), QUERY, "en")
    assert out.sections == {} and out.warnings == [phrases("en")["empty_answer"]]


def test_no_hits_warns_without_loading_the_model(tmp_path):
    generator = create_generator("llm", model_path=tmp_path / "absent.gguf")
    out = generator.generate([], QUERY, "en")
    assert out.sections == {} and out.warnings == [phrases("en")["no_hits"]]
    image_only = Record("img:1", "image", image="a.png", study="s9")
    out = generator.generate(hits_of([image_only]), QUERY, "zh")
    assert out.warnings == [phrases("zh")["no_reports"]]
    assert generator._llama is None


def test_the_support_check_marks_the_llm_sentences():
    def same_vector(texts):
        return np.ones((len(texts), 4), dtype=np.float32)

    answer = ("Findings:\nThe heart is normal in size [1].\nLarge right pneumothorax [3].\n"
              "Impression:\nOsseous structures intact.")
    generator = with_fake(answer, support=SupportCheck(same_vector))
    out = generator.generate(hits_of(CASES), QUERY, "en")
    assert [s.supported for s in out.sentences()] == [True, False, False]
    assert any("pneumothorax" in issue for issue in out.sentences()[1].issues)
    assert out.sentences()[2].issues == ["cites no retrieved case"]
    assert out.warnings == ["2 of 3 sentence(s) are not supported by the cases they cite."]


def test_close_frees_the_model():
    generator = with_fake(ANSWER)
    fake = generator._llama
    generator.close()
    assert fake.closed and generator._llama is None
    generator.close()  # twice is harmless


def test_load_names_the_package_when_llama_cpp_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(ValueError, match="llama-cpp-python"):
        create_generator("llm").load()


def test_load_names_a_missing_model_file(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        create_generator("llm", model_path=tmp_path / "absent.gguf").load()


# --- the packaged 1.5B model --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_llm():
    """The packaged model, loaded once; assembled (~1.1 GB) into the default models folder
    (~/.cache/caselens/models, or $CASELENS_MODELS) on first use and reused after."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed "
                        "(pip install 'llama-cpp-python==0.3.36')")
    from generator.gguf import packaged_gguf

    try:
        path = packaged_gguf()
    except FileNotFoundError as err:
        pytest.skip(f"the packaged GGUF model is not installed: {err}")
    generator = LlamaCppGenerator(model_path=path, max_tokens=120, max_seconds=180, cases=3)
    generator.load()
    yield generator
    generator.close()


# Before the answer was prefilled with its first heading, the English answer listed the cases
# under "1." "2." and cited nothing, and the Chinese one copied the English sentences.
@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_real_model_writes_a_cited_report(real_llm, lang):
    started = time.perf_counter()
    out = real_llm.generate(hits_of(CASES), Query(image="new-study.png", lang=lang), lang)
    log.warning("real %s report in %.1f s: %s", lang, time.perf_counter() - started,
                json.dumps(out.to_dict(), ensure_ascii=False))
    assert out.sections, out.warnings
    ids = {r.id for r in CASES}
    cited = [c for s in out.sentences() for c in s.cites]
    assert set(cited) <= ids
    assert cited, f"no sentence cites a case: {out.to_dict()}"
    # a number of no case is the model's error, listed rather than dropped: record, don't fail
    for error in out.errors:
        log.warning("model error: %s", error)
    if lang == "zh":
        assert has_cjk(out.text()), out.text()


@pytest.mark.slow
def test_real_model_runs_in_its_worker_and_loads_without_extra_buffer_types(real_llm):
    from generator.llm import llama_cpp_model

    assert real_llm._llama is None and real_llm._worker.alive  # generation ran in the worker
    assert real_llm._worker.pid != os.getpid()
    stats = real_llm.decode_stats()
    assert stats is None or stats["tokens"] >= 0
    # what the AMX fix does, here in this process: the params carry the choice, decode runs
    llama = llama_cpp_model(str(real_llm.model_path), n_ctx=256, n_threads=2,
                            use_extra_bufts=False)
    try:
        assert llama.model_params.use_extra_bufts is False
        assert llama("Findings:", max_tokens=4)["choices"][0]["text"]
    finally:
        llama.close()


def test_a_sentence_quoted_without_citation_is_cited_by_its_words():
    answer = "Findings:\n" + CASES[0].text.split(". ")[0] + ".\nImpression:\nOsseous structures intact."
    out = with_fake(answer).generate(hits_of(CASES), QUERY, "en")
    quoted, invented = out.sentences()
    assert quoted.cites and quoted.cites[0] == CASES[0].id
    assert invented.cites == []
    assert phrases("en")["cited_by_matching"].format(count=1) in out.warnings


def test_cli_names_a_missing_llm_file_and_an_unknown_generator(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["ask", "--text", "effusion", "--generator", "llm",
                                 "--llm-path", str(tmp_path / "x.gguf"), "--index", str(tmp_path)])
    assert result.exit_code != 0 and "x.gguf is not a file" in result.output
    result = runner.invoke(app, ["ask", "--text", "effusion", "--generator", "gpt9",
                                 "--index", str(tmp_path)])
    assert result.exit_code != 0 and "unknown generator 'gpt9'" in result.output


# --- extra buffer types and AMX (llama.cpp #20824) ----------------------------------------

SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f "
                   "avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n\n"
                   "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile amx_int8\n")
SKYLAKE_SERVER = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n"


def test_extra_buffer_types_are_off_on_a_cpu_with_amx_only():
    from generator.llm import cpu_flags, wants_extra_bufts

    assert {"amx_tile", "amx_int8", "avx512f"} <= cpu_flags(SAPPHIRE_RAPIDS)
    assert wants_extra_bufts(SAPPHIRE_RAPIDS) is False
    assert wants_extra_bufts(SKYLAKE_SERVER) is True
    assert wants_extra_bufts("flags : fpu amx_bf16\n") is False  # any AMX flag
    assert wants_extra_bufts("") is True  # no /proc/cpuinfo (not Linux): no AMX found
    assert wants_extra_bufts("Features : fp asimd sve\n") is True  # aarch64


@pytest.mark.parametrize("override, expected", [("1", True), ("0", False), ("on", True),
                                                ("false", False), ("", False), (None, False)])
def test_the_environment_overrides_the_cpus_choice(override, expected):
    from generator.llm import wants_extra_bufts

    assert wants_extra_bufts(SAPPHIRE_RAPIDS, override) is expected
    if override:
        assert wants_extra_bufts(SKYLAKE_SERVER, override) is expected


def test_a_bad_override_says_what_to_give():
    from generator.llm import ENV_EXTRA_BUFTS, wants_extra_bufts

    with pytest.raises(ValueError, match=f"{ENV_EXTRA_BUFTS} must be 1 or 0, not 'maybe'"):
        wants_extra_bufts(SKYLAKE_SERVER, "maybe")


def test_the_model_params_carry_the_choice_while_the_model_loads():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    import llama_cpp.llama_cpp as bindings

    from generator.llm import _model_params

    default = bindings.llama_model_default_params
    assert default().use_extra_bufts is True  # llama.cpp's own default
    with _model_params(False):
        assert bindings.llama_model_default_params().use_extra_bufts is False
    assert bindings.llama_model_default_params is default
