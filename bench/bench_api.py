"""Load test of the HTTP API: a bounded loop of parallel clients against 127.0.0.1.

    python bench/bench_api.py --index indexes/default --image corpora/demo/dicom/RG1_UNCI.dcm \
        [--clients 4] [--requests 40]

Starts the app (uvicorn, in this process) on a free local port, then for each call kind
(image search, text search, ask in English and Chinese) sends --requests requests from
--clients threads and prints requests/s and p50 / p95 latency. Only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from rag.api import Settings, create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(index: Path, port: int) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(index=index)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready (is the index built? see /readyz)")


def load(url: str, make_request, clients: int, requests: int) -> tuple[float, float, float, int]:
    def one(_):
        started = time.perf_counter()
        response = make_request(client, url)
        return time.perf_counter() - started, response.status_code

    with httpx.Client(timeout=120) as client:
        one(0)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    times = sorted(t * 1000 for t, _ in results)
    failed = sum(status != 200 for _, status in results)
    return requests / wall, statistics.median(times), times[int(len(times) * 0.95) - 1], failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--image", type=Path, required=True, help="query image (PNG/JPEG/DICOM)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    image = args.image.read_bytes()
    port = free_port()
    server = serve(args.index, port)
    base = f"http://127.0.0.1:{port}"
    upload = {"file": (args.image.name, image, "application/octet-stream")}
    calls = {
        "search image->reports k=5": lambda c, u: c.post(f"{u}/v1/search", files=upload,
                                                         data={"k": "5"}),
        "search text->reports k=5": lambda c, u: c.post(
            f"{u}/v1/search", data={"text": "left pleural effusion", "k": "5"}),
        "ask image en": lambda c, u: c.post(f"{u}/v1/ask", files=upload, data={"lang": "en"}),
        "ask image zh": lambda c, u: c.post(f"{u}/v1/ask", files=upload, data={"lang": "zh"}),
    }
    print(f"index {args.index}, {args.clients} clients, {args.requests} requests per row")
    print("| call | requests/s | p50 ms | p95 ms | failed |")
    print("|---|---:|---:|---:|---:|")
    for name, call in calls.items():
        rate, p50, p95, failed = load(base, call, args.clients, args.requests)
        print(f"| {name} | {rate:.1f} | {p50:.0f} | {p95:.0f} | {failed} |", flush=True)
    server.should_exit = True


if __name__ == "__main__":
    main()
