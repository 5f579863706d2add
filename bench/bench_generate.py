"""Seconds per `ask` for each generator, split into retrieval, writing and the support check.

    python bench/bench_generate.py --index indexes/default -g grounded -g llm --repeat 5 \
        --image corpora/demo/dicom/RG1_UNCI.dcm --lang en
    python bench/bench_generate.py --index runs/eval-report/cov-ctr-train-default -g mllm \
        -g llm --llm-model qwen2.5-0.5b --image IMAGE --lang zh

One warm session per generator (model loading is reported apart); each repeat asks about the
same image, so retrieval is identical and the figures compare the writers.

For llm, also the decode speed (generated tokens/s after the first token, median) and what the
worker process costs: `--in-process` loads the model in this process instead (no crash
isolation) to compare `open+load`. `--extra-bufts on|off` forces llama.cpp's extra buffer types
(weight repacking; off is the fix for the AMX crash, llama.cpp #20824):

    python bench/bench_generate.py -g llm --image IMAGE --extra-bufts on --repeat 3
    python bench/bench_generate.py -g llm --image IMAGE --extra-bufts off --repeat 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.llm import _read_cpuinfo, cpu_flags  # noqa: E402
from generator.support import SupportCheck  # noqa: E402
from rag import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=pipeline.DEFAULT_INDEX)
    parser.add_argument("--image", required=True)
    parser.add_argument("--lang", default="en", choices=("en", "zh"))
    parser.add_argument("-g", "--generator", action="append", dest="generators")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--llm-path", type=Path)
    parser.add_argument("--llm-model", help="packaged GGUF for llm: qwen2.5-1.5b, qwen2.5-0.5b")
    parser.add_argument("--mllm", help="mllm weights: a shipped variant or a train mllm --out dir")
    parser.add_argument("--extra-bufts", choices=("auto", "on", "off"), default="auto",
                        help="llm: llama.cpp extra buffer types (auto: off on AMX CPUs)")
    parser.add_argument("--in-process", action="store_true",
                        help="llm: load the model in this process, not in a worker")
    args = parser.parse_args()
    flags = cpu_flags(_read_cpuinfo())
    print(f"cpu: {os.cpu_count()} cores, avx2 {'avx2' in flags}, avx512f {'avx512f' in flags}, "
          f"amx {sorted(f for f in flags if f.startswith('amx')) or False}")

    for name in args.generators or ["grounded", "llm"]:
        options = ({"model_path": args.llm_path, "model": args.llm_model or "qwen2.5-1.5b",
                    "extra_bufts": {"auto": None, "on": True, "off": False}[args.extra_bufts],
                    "isolate": not args.in_process}
                   if name == "llm" else {"model": args.mllm} if name == "mllm" else {})
        started = time.perf_counter()
        session = pipeline.open_session(args.index, generator=name, check_support=False,
                                        generator_options=options)
        opened = time.perf_counter() - started
        writer, check = session.generator, SupportCheck()
        query = pipeline.make_query(args.image, None, ("image", "report"), "auto", args.lang)
        if hasattr(writer, "load"):
            started = time.perf_counter()
            writer.load()
            opened += time.perf_counter() - started
        check.check(writer.generate(pipeline.search(session, query), query, args.lang),
                    [])  # warm the check's embedder outside the timings
        rows: dict[str, list[float]] = {"retrieve": [], "write": [], "check": [], "total": []}
        sentences, speeds = 0, []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            hits = pipeline.search(session, query)
            t1 = time.perf_counter()
            report = writer.generate(hits, query, args.lang)
            t2 = time.perf_counter()
            check.check(report, hits)
            t3 = time.perf_counter()
            for key, value in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                rows[key].append(value)
            sentences = len(report.sentences())
            decode = writer.decode_stats() if hasattr(writer, "decode_stats") else None
            if decode and decode["tokens"] > 1 and decode["decode_seconds"] > 0:
                speeds.append((decode["tokens"] - 1) / decode["decode_seconds"])
        print(f"{name:<9} open+load {opened:5.1f} s | " + " | ".join(
            f"{key} {statistics.median(values):6.2f} s" for key, values in rows.items())
            + f" | {sentences} sentences, {report.unsupported} flagged ({args.lang}, "
            f"median of {args.repeat})"
            + (f" | decode {statistics.median(speeds):.1f} tokens/s" if speeds else ""))
        session.close()


if __name__ == "__main__":
    main()
