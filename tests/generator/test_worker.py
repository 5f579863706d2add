"""Models in a worker process (generator/worker.py): a crash on purpose (abort, SIGSEGV, exit,
a hang) kills only the worker; the caller gets GeneratorCrashed and the next call a new worker.
The crashing models are fakes (tests/fixtures/fake_llamas.py), never the real llama.cpp bug."""
from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

import cli
from generator.base import GeneratorCrashed, create_generator
from generator.worker import ModelWorker, death_cause
from rag.types import Query
from tests.fixtures.llm_cases import CASES, hits_of

FAKES = "tests.fixtures.fake_llamas"
QUERY = Query(image="new-study.png", lang="en")


@pytest.fixture
def echo():
    worker = ModelWorker(f"{FAKES}:Echo", {"prefix": ">"})
    yield worker
    worker.close()


def fake_llm(factory: str = "triggered", **options):
    return create_generator("llm", llama_factory=f"{FAKES}:{factory}", **options)


def test_a_call_runs_in_another_process_and_returns_its_value(echo):
    assert echo.call("echo", "ab", repeat=2) == ">abab"
    child = echo.call("whose")
    assert child == echo.pid and child != os.getpid()
    assert echo.started_seconds is not None and echo.alive


def test_a_python_error_in_the_worker_is_raised_as_itself_and_the_worker_lives_on(echo):
    child = echo.call("whose")
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        echo.call("fail")
    with pytest.raises(RuntimeError, match="cannot be sent back"):
        echo.call("unpicklable")
    assert echo.call("whose") == child


def test_a_factory_that_fails_leaves_no_worker_behind():
    worker = ModelWorker(f"{FAKES}:NoSuchThing")
    with pytest.raises(AttributeError, match="NoSuchThing"):
        worker.start()
    assert worker.pid is None and not worker.alive


def test_a_caller_waits_for_the_one_request_in_flight_then_gets_a_clear_error(echo):
    echo.wait = 0.05
    echo._lock.acquire()  # a request in flight
    try:
        with pytest.raises(TimeoutError, match="busy with other requests for 0.05 s"):
            echo.call("echo", "x")
    finally:
        echo._lock.release()
    assert echo.call("echo", "x") == ">x"


def test_a_worker_silent_past_the_timeout_is_killed_and_replaced(echo):
    first = echo.call("whose")
    with pytest.raises(GeneratorCrashed, match="no answer within 0.5 s"):
        echo.call("nap", 30, timeout=0.5)
    assert echo.call("whose") != first


def test_close_stops_the_worker(echo):
    echo.start()
    proc = echo._proc
    echo.close()
    assert proc.poll() == 0 and not echo.alive
    echo.close()  # twice is harmless


@pytest.mark.parametrize("code, cause", [(-6, "signal SIGABRT"), (-11, "signal SIGSEGV"),
                                         (3, "exit code 3"), (-9, "signal SIGKILL (killed")])
def test_death_causes_in_words(code, cause):
    assert death_cause(code).startswith(cause)


# --- the llm generator through its worker ---------------------------------------------------


def test_the_llm_writes_through_its_worker_with_the_cpus_extra_buffer_choice():
    generator = fake_llm(extra_bufts=False)
    try:
        out = generator.generate(hits_of(CASES), QUERY, "en")
        text, _ = generator.complete("system", "WHO")
        worker = generator._worker.pid
    finally:
        generator.close()
    assert [s.cites for s in out.sentences()] == [["iu:1"], ["iu:1"]]
    assert generator._llama is None  # the model never loaded in this process
    pid = int(text.split()[1])
    assert pid == worker and pid != os.getpid() and text.endswith("extra_bufts False")


@pytest.mark.parametrize("trigger, cause", [("ABORT", "signal SIGABRT"),
                                            ("SEGFAULT", "signal SIGSEGV"),
                                            ("EXIT3", "exit code 3")])
def test_a_crash_in_the_worker_is_one_sentence_and_the_next_call_gets_a_new_worker(trigger, cause):
    generator = fake_llm()
    try:
        generator.complete("system", "hello")
        first = generator._worker.pid
        with pytest.raises(GeneratorCrashed) as crashed:
            generator.complete("system", f"please {trigger}")
        assert str(crashed.value) == f"the language model crashed: {cause} ; use --generator grounded"
        text, _ = generator.complete("system", "hello again")
        assert "Findings:" in text and generator._worker.pid != first
    finally:
        generator.close()


def test_concurrent_callers_share_one_worker_one_request_at_a_time():
    from concurrent.futures import ThreadPoolExecutor

    generator = fake_llm()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: generator.complete("system", "WHO")[0], range(8)))
        assert len({answer.split()[1] for answer in answers}) == 1  # one worker pid for all
    finally:
        generator.close()


def test_a_python_error_of_the_model_is_not_a_crash():
    generator = fake_llm()
    try:
        with pytest.raises(ValueError, match="refuses this prompt"):
            generator.complete("system", "RAISE")
        assert generator._worker.alive
    finally:
        generator.close()


def test_a_crash_while_loading_is_a_crash_too():
    generator = fake_llm("aborting_on_load")
    with pytest.raises(GeneratorCrashed, match="SIGABRT"):
        generator.generate(hits_of(CASES), QUERY, "en")
    generator.close()


def test_cli_ask_prints_the_crash_in_one_sentence_and_exits_1(indexed_corpus, monkeypatch):
    idx, corpus = indexed_corpus
    monkeypatch.setattr(cli, "generator_options",
                        lambda *_, **__: {"llama_factory": f"{FAKES}:aborting_on_load"})
    result = CliRunner().invoke(cli.app, ["ask", "--image", str(corpus / "img/c1_0.png"),
                                          "--generator", "llm", "--index", str(idx), "--json"])
    assert result.exit_code == 1
    assert ("the language model crashed: signal SIGABRT ; use --generator grounded"
            in " ".join(result.output.split()))
    assert "Traceback" not in result.output and not isinstance(result.exception, GeneratorCrashed)


def test_eval_report_records_the_crashed_items_and_goes_on(indexed_corpus, tmp_path):
    from rag.evaluation.reports import evaluate_reports, to_markdown

    idx, corpus = indexed_corpus
    result = evaluate_reports(corpus, "all", "en", ("grounded", "llm"), index_dir=idx, limit=3,
                              encoder="tiny", work_dir=tmp_path,
                              options={"llm": {"llama_factory": f"{FAKES}:aborting_on_load"}})
    assert result["pairs"] == 3
    assert result["systems"]["llm"]["failed"] == 3 and result["systems"]["grounded"]["failed"] == 0
    assert len(result["failures"]) == 3
    assert all("signal SIGABRT" in failure["error"] for failure in result["failures"])
    assert result["systems"]["grounded"]["nlg"]["rouge_l"] > 0
    assert "llm: 3 of 3 drafts failed" in to_markdown(result)
    json.dumps(result)  # still one JSON document
