"""Load test of the HTTP API: bounded loops of parallel clients against 127.0.0.1.

    python bench/bench_api.py --index indexes/default [--clients 8] [--requests 200] \
        [--overload 64] [--image corpora/demo/dicom/RG1_UNCI.dcm]

Starts the API (uvicorn) in a child process on a free local port, so the clients' threads do
not share the server's interpreter, then:
1. where one text search spends its time, in this process: the query encoding, the whole
   retrieval, and one request over HTTP with no other client;
2. text search at --clients: requests/s, p50 / p95 latency, failures;
3. overload: --overload clients at once, each sending 3 searches: how many are answered, how
   many refused with 503 + Retry-After;
4. with --image: image search and ask (en, zh) at --clients.
/healthz is polled every 100 ms by its own client throughout; its p50 / max latency is
printed per row. Only 127.0.0.1 is contacted; every request has a timeout.
`--app` serves another module's create_app (e.g. an older copy of rag/service/app.py on PYTHONPATH)
to compare versions on the same machine.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

QUERY = {"text": "left pleural effusion", "to": "reports", "k": "5"}
SERVER = ("import importlib, sys, uvicorn; from pathlib import Path; "
          "api = importlib.import_module(sys.argv[1]); "
          "threads = {'threads': int(sys.argv[4])} if 'threads' in api.Settings.__dataclass_fields__ "
          "else {}; "
          "uvicorn.run(api.create_app(api.Settings(index=Path(sys.argv[2]), **threads)), "
          "host='127.0.0.1', port=int(sys.argv[3]), log_level='warning')")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(app: str, index: Path, port: int, threads: int = 1) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-c", SERVER, app, str(index), str(port),
                               str(threads)], cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a child process that is loading models
    server.kill()
    raise SystemExit("the server did not become ready (is the index built? see /readyz)")


class HealthProbe:
    """GET /healthz every 100 ms on its own connection; latencies kept per phase."""

    def __init__(self, base: str):
        self.base, self.times, self.failed = base, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(0.1):
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.base}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append((time.perf_counter() - started) * 1000)
                self.failed += not ok

    def take(self) -> str:
        times, self.times, failed, self.failed = sorted(self.times), [], self.failed, 0
        if not times:
            return "-"
        return f"{statistics.median(times):.0f} / {times[-1]:.0f}" + (
            f" ({failed} failed)" if failed else "")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def load(base: str, call, clients: int, requests: int) -> dict:
    """`requests` calls from `clients` threads; latency of each, status counts."""
    def one(_):
        started = time.perf_counter()
        try:
            response = call(client, base)
            status, retry = response.status_code, response.headers.get("retry-after")
        except httpx.HTTPError:
            status, retry = 0, None
        return (time.perf_counter() - started) * 1000, status, retry

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
    ok = sorted(t for t, status, _ in results if status == 200)
    busy = [(t, retry) for t, status, retry in results if status == 503]
    return {"rate": len(ok) / wall, "p50": statistics.median(ok) if ok else float("nan"),
            "p95": ok[max(0, int(len(ok) * 0.95) - 1)] if ok else float("nan"), "ok": len(ok),
            "busy": len(busy), "busy_ms": max((t for t, _ in busy), default=0.0),
            "retry_after": all(retry for _, retry in busy),
            "other": len(results) - len(ok) - len(busy)}


def breakdown(index: Path, base: str, threads: int) -> None:
    """Median ms of the parts of one text search, in this process (with the server's torch
    threads), then over HTTP alone."""
    import torch

    from rag import pipeline
    from rag.types import Query

    torch.set_num_threads(threads)

    def median_ms(call, n=30) -> float:
        call()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    with pipeline.open_session(index, generator="grounded") as session:
        query = Query(text=QUERY["text"], to=("report",), k=5)
        encode = median_ms(lambda: session.encoder.encode_texts([QUERY["text"]]))
        vector = session.retriever.query_vector(query)
        dense = median_ms(lambda: session.retriever.index.search("report", vector[None, :], 5))
        lexical = median_ms(lambda: session.store.lexical(QUERY["text"], "report", 5))
        retrieve = median_ms(lambda: session.retriever.retrieve(query))
    with httpx.Client(timeout=30) as client:
        http = median_ms(lambda: client.post(f"{base}/v1/search", data=QUERY))
    print(f"one text search (median ms): query encoding {encode:.1f}, vector search "
          f"{dense:.2f}, lexical search {lexical:.2f}, whole retrieval {retrieve:.1f}, "
          f"over HTTP with no other client {http:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=Path("indexes/default"))
    parser.add_argument("--image", type=Path, help="query image (PNG/JPEG/DICOM) for the image "
                                                   "search and ask rows")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per row")
    parser.add_argument("--overload", type=int, default=64, help="clients of the overload row")
    parser.add_argument("--app", default="rag.service.app", help="module whose create_app is served")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server's "
                                                                "worker (as serve --threads)")
    parser.add_argument("--no-breakdown", action="store_true")
    args = parser.parse_args()
    port = free_port()
    server = start_server(args.app, args.index.resolve(), port, args.threads)
    base = f"http://127.0.0.1:{port}"
    try:
        if not args.no_breakdown:
            breakdown(args.index, base, args.threads)
        probe = HealthProbe(base)
        rows = {f"search text->reports k=5, {args.clients} clients": (
            lambda c, u: c.post(f"{u}/v1/search", data=QUERY), args.clients, args.requests)}
        rows[f"overload: search text, {args.overload} clients x 3"] = (
            lambda c, u: c.post(f"{u}/v1/search", data=QUERY), args.overload, args.overload * 3)
        if args.image:
            upload = {"file": (args.image.name, args.image.read_bytes(), "application/octet-stream")}
            rows.update({
                "search image->reports k=5": (lambda c, u: c.post(
                    f"{u}/v1/search", files=upload, data={"k": "5"}), args.clients, args.requests),
                "ask image en": (lambda c, u: c.post(f"{u}/v1/ask", files=upload,
                                                     data={"lang": "en"}), args.clients, 40),
                "ask image zh": (lambda c, u: c.post(f"{u}/v1/ask", files=upload,
                                                     data={"lang": "zh"}), args.clients, 40)})
        print(f"index {args.index}, app {args.app}")
        print("| call | answered/s | p50 ms | p95 ms | 200 | 503 (slowest ms, Retry-After) "
              "| other | /healthz p50 / max ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, (call, clients, requests) in rows.items():
            probe.take()
            row = load(base, call, clients, requests)
            refused = (f"{row['busy']} ({row['busy_ms']:.0f} ms, "
                       f"{'yes' if row['retry_after'] else 'NO'})" if row["busy"] else "0")
            print(f"| {name} | {row['rate']:.1f} | {row['p50']:.0f} | {row['p95']:.0f} | "
                  f"{row['ok']} | {refused} | {row['other']} | {probe.take()} |", flush=True)
        probe.stop()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
