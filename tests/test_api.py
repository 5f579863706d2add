"""The HTTP API against a small real index (tiny encoder): every endpoint, every error status,
the API key, request logs without patient data, and parallel requests."""
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from rag.service.app import Settings, create_app
from rag.service.dependencies import get_service


@pytest.fixture(scope="module")
def client(index_dir):
    with TestClient(create_app(Settings(index=index_dir))) as test_client:
        yield test_client


def png_bytes(value=200, size=48, noise=False):
    arr = np.full((size, size), 40, np.uint8)
    if noise:  # incompressible: the file is about size * size bytes
        arr = np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)
    arr[:16] = value  # class 0's bright band in the test corpus
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["counts"]["image"]["chest-xray"] == 18


def test_search_by_uploaded_image_returns_hits_with_provenance(client):
    response = client.post("/v1/search", files={"file": ("x.png", png_bytes(), "image/png")},
                           data={"to": ["images", "reports"], "k": "3"})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert {h["kind"] for h in hits} == {"image", "report"} and len(hits) == 6
    image_hit = next(h for h in hits if h["kind"] == "image")
    assert image_hit["thumbnail"].startswith("/v1/records/")
    assert image_hit["route"].startswith("image->image | domain=chest-xray")
    assert image_hit["backend"] == "faiss"
    thumb = client.get(image_hit["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256


def test_search_by_text_with_filters_and_auto_k(client):
    response = client.post("/v1/search", data={"text": "pleural effusion", "to": "reports",
                                               "k": "auto", "lang": "zh"})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits and all(h["lang"] == "zh" for h in hits)
    varied = client.post("/v1/search", data={"text": "pleural effusion", "k": "3",
                                             "diversity": "0.4"})
    assert varied.status_code == 200 and varied.json()["retrieval"]["diversity"] == 0.4
    assert client.post("/v1/search", data={"text": "x", "diversity": "1.5"}).status_code == 422


def test_dicom_upload_is_decoded(client):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    response = client.post("/v1/search", files={"file": ("ct.dcm", data, "application/dicom")})
    assert response.status_code == 200, response.text
    assert response.json()["hits"]


def test_ask_in_chinese_cites_retrieved_cases(client):
    response = client.post("/v1/ask", files={"file": ("x.png", png_bytes(), "image/png")},
                           data={"lang": "zh"})
    assert response.status_code == 200, response.text
    answer = response.json()
    ids = {h["id"] for h in answer["hits"]} | {r["id"] for h in answer["hits"] for r in h["linked"]}
    sentences = [s for part in answer["report"]["sections"].values() for s in part]
    assert answer["report"]["lang"] == "zh" and sentences
    assert all(s["cites"] and set(s["cites"]) <= ids for s in sentences)


def test_record_by_id_hides_server_paths(client):
    hit = client.post("/v1/search", data={"text": "effusion", "to": "images"}).json()["hits"][0]
    record = client.get(f"/v1/records/{hit['id']}").json()
    assert record["id"] == hit["id"] and "root" not in record
    text_hit = client.post("/v1/search", data={"text": "effusion"}).json()["hits"][0]
    assert client.get(f"/v1/records/{text_hit['id']}/thumbnail").status_code == 404


@pytest.mark.parametrize("request_args, status, words", [
    ({"files": {"file": ("x.png", b"not an image at all", "image/png")}}, 400, "cannot read"),
    ({"files": {"file": ("x.png", b"", "image/png")}}, 400, "empty"),
    ({"data": {"text": "effusion", "k": "many"}}, 422, "k must be"),
    ({"data": {"text": "effusion", "to": "videos"}}, 422, "unknown kind"),
    ({"data": {}}, 422, "needs an image or a text"),
])
def test_bad_requests_get_a_clear_json_error(client, request_args, status, words):
    response = client.post("/v1/search", **request_args)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and words in body["error"]


def test_an_unknown_kind_is_one_sentence_422_before_any_work(client):
    done = client.app.state.service.worker.done
    response = client.post("/v1/search", data={"text": "effusion", "to": ["reports", "videos"]})
    assert response.status_code == 422
    assert response.json() == {
        "error": "unknown kind 'videos'; give reports, images, guidelines or qa", "status": 422}
    assert client.app.state.service.worker.done == done  # refused before the worker
    mixed = client.post("/v1/search", data={"text": "effusion", "to": "report, Images",
                                            "k": "2"})
    assert mixed.status_code == 200 and {h["kind"] for h in mixed.json()["hits"]} == {
        "report", "image"}


class RecordingSession:
    """Stands in for the index session: records what a route asked of it."""

    explain = {"route": "recorded"}

    def __init__(self):
        self.calls = []

    def search(self, *args, **filters):
        self.calls.append((args, filters))
        return []


class RecordingService:
    """Runs a route's job at once on a RecordingSession, with no index and no worker."""

    def __init__(self, settings):
        self.settings, self.session = settings, RecordingSession()

    async def run(self, call, receive=None):
        return call(self.session)


def test_search_route_only_delegates_the_parsed_form_to_the_session(tmp_path):
    settings = Settings(index=tmp_path / "nowhere")
    app, service = create_app(settings), RecordingService(settings)
    app.dependency_overrides[get_service] = lambda: service
    with TestClient(app) as test_client:
        response = test_client.post("/v1/search", data={
            "text": "effusion", "to": ["reports,images", "qa"], "k": "auto", "diversity": "0.3",
            "lang": "zh"})
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == [] and response.json()["retrieval"] == {"route": "recorded"}
    assert service.session.calls == [
        ((None, "effusion", ("report", "image", "qa"), "auto", 0.3),
         {"domain": None, "modality": None, "lang": "zh", "body_part": None})]


class BrokenSession(RecordingSession):
    def search(self, *args, **filters):
        raise ValueError("an internal slip, not the user's")


def test_an_internal_error_is_a_500_not_blamed_on_the_request(tmp_path):
    settings = Settings(index=tmp_path / "nowhere")
    app, service = create_app(settings), RecordingService(settings)
    service.session = BrokenSession()
    app.dependency_overrides[get_service] = lambda: service
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/v1/search", data={"text": "effusion"})
    assert response.status_code == 500


def test_bad_language_field_and_unknown_record(client):
    response = client.post("/v1/ask", data={"question": "effusion?", "lang": "fr"})
    assert response.status_code == 422 and "lang" in response.json()["error"]
    response = client.get("/v1/records/no:such-id")
    assert response.status_code == 404 and "no record" in response.json()["error"]


def test_limits_on_upload_size_and_pixels(index_dir):
    settings = Settings(index=index_dir, max_upload_bytes=1000, max_pixels=100 * 100)
    with TestClient(create_app(settings)) as small:
        big = small.post("/v1/search", files={"file": ("x.png", png_bytes(size=40, noise=True),
                                                       "image/png")})
        assert big.status_code == 413 and "larger than" in big.json()["error"]
        huge = small.post("/v1/search", content=b"x" * 200_000,
                          headers={"content-type": "multipart/form-data; boundary=b"})
        assert huge.status_code == 413  # refused from Content-Length, before parsing
    settings = Settings(index=index_dir, max_pixels=30 * 30)
    with TestClient(create_app(settings)) as small:
        response = small.post("/v1/search", files={"file": ("x.png", png_bytes(), "image/png")})
        assert response.status_code == 400 and "pixels" in response.json()["error"]


def test_missing_index_is_503_with_what_to_do(tmp_path):
    with TestClient(create_app(Settings(index=tmp_path / "nowhere"))) as lost:
        assert lost.get("/healthz").status_code == 200
        ready = lost.get("/readyz")
        assert ready.status_code == 503 and "python cli.py index" in ready.json()["error"]
        assert lost.post("/v1/search", data={"text": "x"}).status_code == 503


def test_api_key_guards_v1_but_not_health(index_dir):
    with TestClient(create_app(Settings(index=index_dir, api_key="s3cret"))) as guarded:
        assert guarded.get("/healthz").status_code == 200
        assert guarded.post("/v1/search", data={"text": "x"}).status_code == 401
        wrong = guarded.post("/v1/search", data={"text": "x"}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        ok = guarded.post("/v1/search", data={"text": "x"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200


def test_request_logs_hold_no_texts_ids_or_image_bytes(client, caplog):
    caplog.set_level(logging.INFO, logger="caselens.api")
    client.post("/v1/search", data={"text": "Doe^Jane MRN-998877 effusion"})
    hit = client.post("/v1/search", data={"text": "effusion", "to": "images"}).json()["hits"][0]
    client.get(f"/v1/records/{hit['id']}")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "caselens.api")
    assert "POST /v1/search -> 200" in logged and "GET /v1/records/{id} -> 200" in logged
    assert "Doe" not in logged and "998877" not in logged and hit["id"] not in logged


def test_parallel_requests_all_answer_correctly(client):
    single = client.post("/v1/search", data={"text": "pleural effusion", "k": "5"}).json()
    want = [h["id"] for h in single["hits"]]

    def one(i):
        if i % 2:
            return client.post("/v1/search", data={"text": "pleural effusion", "k": "5"})
        return client.post("/v1/ask", files={"file": ("x.png", png_bytes(), "image/png")})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(16)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert all([h["id"] for h in r.json()["hits"]] == want for r in responses[1::2])


def test_openapi_schema_documents_the_endpoints(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/ask", "/v1/records/{record_id}", "/healthz", "/readyz"} <= set(
        schema["paths"])
    assert "422" in schema["paths"]["/v1/search"]["post"]["responses"]
    assert json.dumps(schema).count("examples") > 5


def test_python_api_is_the_same_session(index_dir, tmp_path):
    from rag import open_index

    with open_index(index_dir) as index:
        hits = index.search(text="pleural effusion", to="reports", k=3, lang="zh")
        assert hits and all(h.record.lang == "zh" for h in hits)
        answer = index.ask(image=png_bytes(), lang="en")
        assert answer.report.sections and answer.hits
        assert index.record(hits[0].record.id).id == hits[0].record.id
