"""What a real server sees: a chunked upload (no Content-Length) is stopped at the limit and
an upload with a wrong API key is refused before any of its body is read (the bytes the app
reads are counted), and a request whose client hangs up while it waits is never run.
uvicorn serves on a socket bound before it starts, so no test waits for it by sleeping."""
import socket
import threading
from contextlib import contextmanager

import httpx
import uvicorn

from rag.service.app import Settings, create_app
from tests.fixtures.held_worker import TEXT, Held

LIMIT = 256 * 1024
CHUNK = 64 * 1024
BOUNDARY = "caselensboundary"
PART_HEAD = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
             f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode()



class CountingApp:
    """ASGI wrapper that counts the request-body bytes the app pulled from the server."""

    def __init__(self, app):
        self.app, self.read = app, 0

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@contextmanager
def serving(app):
    """uvicorn in a thread on a loopback socket that accepts connections from the start."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def chunked_body(sent: list[int], total: int):
    """A multipart upload of `total` bytes sent in chunks; `sent` counts what was produced."""
    yield PART_HEAD
    while sent[0] < total:
        sent[0] += CHUNK
        yield b"\0" * CHUNK


def post_chunked(base: str, total: int, headers: dict[str, str] | None = None):
    sent = [0]
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    with httpx.Client(timeout=60) as client:
        response = client.post(f"{base}/v1/search", content=chunked_body(sent, total),
                               headers=headers)
    return response, sent[0]


def test_a_chunked_upload_over_the_limit_stops_at_the_limit(index_dir):
    app = CountingApp(create_app(Settings(index=index_dir, max_upload_bytes=LIMIT)))
    with serving(app) as base:
        response, sent = post_chunked(base, 64 * 1024 * 1024)
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json() == {"error": response.json()["error"], "status": 413}
    assert "larger than" in response.json()["error"]
    # the app stopped at the limit (form overhead included) plus what the server had
    # buffered into its last message (up to one socket read), not at 64 MB
    assert app.read <= LIMIT + 64 * 1024 + 512 * 1024
    assert sent < 32 * 1024 * 1024


def test_a_chunked_upload_with_a_wrong_key_is_refused_before_its_body(index_dir):
    app = CountingApp(create_app(Settings(index=index_dir, api_key="s3cret")))
    with serving(app) as base:
        response, _ = post_chunked(base, 8 * 1024 * 1024, {"X-API-Key": "wrong"})
        assert response.status_code == 401 and "API key" in response.json()["error"]
        assert app.read == 0
        with httpx.Client(timeout=60) as client:  # the same with a Content-Length
            declared = client.post(f"{base}/v1/search", files={"file": ("x.png", b"\0" * LIMIT)})
        assert declared.status_code == 401 and app.read == 0
        ok = httpx.post(f"{base}/v1/search", data=TEXT, headers={"X-API-Key": "s3cret"},
                        timeout=60)
        assert ok.status_code == 200 and 0 < app.read < 1000


def test_a_request_whose_client_left_while_waiting_is_dropped(index_dir):
    app = create_app(Settings(index=index_dir))
    service = app.state.service
    with serving(app) as base, httpx.Client(timeout=60) as client:
        assert client.get(f"{base}/readyz").status_code == 200
        held = service.session.search = Held(service.session.search)
        try:
            first = threading.Thread(target=client.post, args=(f"{base}/v1/search",),
                                     kwargs={"data": TEXT})
            first.start()
            assert held.entered.wait(60)
            body = b"text=pleural+effusion"
            leaving = socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])))
            leaving.sendall(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/x-www-form-urlencoded\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert service.worker.wait_for(lambda worker: worker.pending == 2)
            leaving.close()
            assert service.worker.wait_for(lambda worker: worker.dropped == 1)
        finally:
            held.release.set()
        first.join(60)
        assert held.calls == 1  # the dropped request never ran
        assert client.post(f"{base}/v1/search", data=TEXT).status_code == 200
