"""The API never freezes: work runs on one worker thread off the event loop, a full queue is
refused at once with 503 + Retry-After, /healthz answers while the worker is stuck, texts
past the limits are refused before any work, a crashed language model is one 503, and a
rebuilt index is picked up without a restart. The worker is held by an Event, never a sleep."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from generator.base import GeneratorCrashed
from rag import pipeline
from rag.building import copy_index_folder
from rag.service.app import Settings, create_app
from tests.fixtures.held_worker import TEXT, Held


def test_full_queue_is_refused_at_once_and_healthz_still_answers(index_dir):
    app = create_app(Settings(index=index_dir, max_waiting=2))
    with TestClient(app) as client, ThreadPoolExecutor(3) as pool:
        service = app.state.service
        held = service.session.search = Held(service.session.search)
        try:
            first = pool.submit(client.post, "/v1/search", data=TEXT)
            assert held.entered.wait(60)
            queued = [pool.submit(client.post, "/v1/search", data=TEXT) for _ in range(2)]
            assert service.worker.wait_for(lambda worker: worker.pending == 3)
            started = time.perf_counter()
            refused = client.post("/v1/search", data=TEXT)
            health = client.get("/healthz")
            waited = time.perf_counter() - started
        finally:
            held.release.set()
        answers = [first.result(60)] + [future.result(60) for future in queued]
    assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
    assert refused.json()["status"] == 503 and "busy" in refused.json()["error"]
    assert health.status_code == 200 and waited < 5  # neither waited for the stuck worker
    assert [a.status_code for a in answers] == [200, 200, 200] and held.calls == 3


def test_healthz_and_readyz_answer_while_a_request_is_being_served(index_dir):
    app = create_app(Settings(index=index_dir))
    with TestClient(app) as client, ThreadPoolExecutor(1) as pool:
        held = app.state.service.session.search = Held(app.state.service.session.search)
        try:
            busy = pool.submit(client.post, "/v1/search", data=TEXT)
            assert held.entered.wait(60)
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").json()["status"] == "ready"
        finally:
            held.release.set()
        assert busy.result(60).status_code == 200


@pytest.mark.parametrize("route, field", [("/v1/search", "text"), ("/v1/ask", "question")])
def test_a_megabyte_of_text_is_refused_before_any_work(index_dir, route, field):
    app = create_app(Settings(index=index_dir))
    png = ("x.png", b"\x89PNG not decoded", "image/png")
    with TestClient(app) as client:
        started = time.perf_counter()
        as_form = client.post(route, data={field: "effusion " * 120_000})  # 1.08 MB
        as_multipart = client.post(route, data={field: "effusion " * 120_000},
                                   files={"file": png})
        too_long = client.post(route, data={field: "x" * 2001})
        too_many_words = client.post(route, data={field: "积液" * 600})  # 1,200 characters
        seconds = time.perf_counter() - started
        assert app.state.service.worker.done == 0  # none of them reached the worker
    for response in (as_form, as_multipart, too_long, too_many_words):
        assert response.status_code == 413, response.text
        assert response.json()["status"] == 413
    assert "2,001 characters; at most 2,000" in too_long.json()["error"]
    assert "1,200 words" in too_many_words.json()["error"]
    assert seconds < 10


def test_a_text_at_the_limit_is_served(index_dir):
    with TestClient(create_app(Settings(index=index_dir))) as client:
        response = client.post("/v1/search", data={"text": "pleural effusion " * 117})  # 1,989
        assert response.status_code == 200, response.text


class CrashOnce:
    """A generator whose model process dies on the first call, then works (as the real one
    does when its worker restarts)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def generate(self, hits, query, lang):
        self.calls += 1
        if self.calls == 1:
            raise GeneratorCrashed("signal SIGSEGV")
        return self.real.generate(hits, query, lang)

    def close(self):
        self.real.close()


def test_a_crashed_language_model_is_one_503_and_the_next_request_works(index_dir):
    app = create_app(Settings(index=index_dir))
    with TestClient(app) as client:
        session = app.state.service.session
        session.generator = CrashOnce(session.generator)
        crashed = client.post("/v1/ask", data={"question": "effusion?"})
        assert crashed.status_code == 503
        assert crashed.json() == {"status": 503, "error": crashed.json()["error"]}
        assert "language model crashed (signal SIGSEGV)" in crashed.json()["error"]
        after = client.post("/v1/ask", data={"question": "effusion?"})
        assert after.status_code == 200 and after.json()["report"]["sections"]
        assert client.get("/healthz").status_code == 200


def test_a_rebuilt_index_is_picked_up_without_a_restart(index_dir, tmp_path):
    live = tmp_path / "index"
    copy_index_folder(index_dir, live)
    with TestClient(create_app(Settings(index=live))) as client:
        before = client.get("/readyz").json()
        assert before["counts"]["report"] and before["reloads"] == 0
        assert pipeline.delete(live, filters={"lang": "zh"}) == 18  # swaps in a new build
        after = client.get("/readyz").json()
        assert after["reloads"] == 1 and after["counts"] != before["counts"]
        hits = client.post("/v1/search", data={"text": "积液", "k": "5"}).json()["hits"]
        assert hits and all(hit["lang"] == "en" for hit in hits)
        assert client.get("/readyz").json()["reloads"] == 1  # nothing new: not reopened


def test_a_search_after_a_rebuild_reloads_before_it_runs(index_dir, tmp_path):
    live = tmp_path / "index"
    copy_index_folder(index_dir, live)
    with TestClient(create_app(Settings(index=live))) as client:
        pipeline.delete(live, filters={"lang": "en"})
        hits = client.post("/v1/search", data={"text": "effusion", "k": "5"}).json()["hits"]
        assert hits and all(hit["lang"] == "zh" for hit in hits)


def test_admin_reload_needs_the_key_and_keeps_serving_when_the_index_breaks(index_dir, tmp_path):
    live = tmp_path / "index"
    copy_index_folder(index_dir, live)
    key = {"X-API-Key": "s3cret"}
    with TestClient(create_app(Settings(index=live, api_key="s3cret"))) as client:
        assert client.post("/v1/admin/reload").status_code == 401
        reloaded = client.post("/v1/admin/reload", headers=key)
        assert reloaded.status_code == 200 and reloaded.json()["reloads"] == 1
        (live / "manifest.json").write_text("{}")  # a broken build
        broken = client.post("/v1/admin/reload", headers=key)
        assert broken.status_code == 503 and "still serving" in broken.json()["error"]
        search = client.post("/v1/search", data=TEXT, headers=key)
        assert search.status_code == 200 and search.json()["hits"]


def test_an_index_built_after_start_is_served(index_dir, tmp_path):
    live = tmp_path / "index"
    with TestClient(create_app(Settings(index=live))) as client:
        assert client.get("/readyz").status_code == 503
        copy_index_folder(index_dir, live)
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/search", data=TEXT).status_code == 200


def test_serve_passes_the_queue_and_text_limits(tmp_path, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    import cli

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    result = CliRunner().invoke(cli.app, ["serve", "--index", str(tmp_path), "--max-waiting", "3",
                                          "--max-text-chars", "500", "--port", "8123",
                                          "--threads", "2"])
    assert result.exit_code == 0, result.output
    settings = served["app"].state.service.settings
    assert (settings.max_waiting, settings.max_text_chars, settings.threads) == (3, 500, 2)
    assert served["port"] == 8123
