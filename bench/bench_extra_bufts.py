"""llama.cpp's extra buffer types (weight repacking; the AMX path of llama.cpp #20824) on vs off,
on this CPU: both copies of the packaged GGUF are loaded in one process and their decodes
alternate, so a busy machine's load hits both alike. Prints the CPU flags, load seconds, and the
median prompt and decode tokens/s of each.

    python bench/bench_extra_bufts.py [--rounds 6] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.gguf import packaged_gguf  # noqa: E402
from generator.llm import _read_cpuinfo, cpu_flags, llama_cpp_model  # noqa: E402

PROMPT = ("Findings: The heart is normal in size. There is a small left pleural effusion with "
          "adjacent atelectasis. No pneumothorax. The lungs are otherwise clear. Impression: ") * 4


def rates(model, max_tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) of one greedy completion."""
    model.reset()
    n_prompt = len(model.tokenize(PROMPT.encode()))
    started, first, count = time.perf_counter(), None, 0
    for chunk in model.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0,
                                         stream=True, seed=0):
        if chunk["choices"][0]["text"]:
            count += 1
            first = first or time.perf_counter()
    ended = time.perf_counter()
    return n_prompt / (first - started), (count - 1) / max(ended - first, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    flags = cpu_flags(_read_cpuinfo())
    print("cpu: avx2", "avx2" in flags, "| avx512f", "avx512f" in flags,
          "| amx", sorted(f for f in flags if f.startswith("amx")) or False)
    path = str(packaged_gguf())
    models = {}
    for extra in (True, False):
        started = time.perf_counter()
        models[extra] = llama_cpp_model(path, 2048, args.threads, extra)
        print(f"load, extra buffer types {'on' if extra else 'off'}: "
              f"{time.perf_counter() - started:.1f} s")
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for extra in ((True, False) if round_ % 2 == 0 else (False, True)):
            runs[extra].append(rates(models[extra], args.max_tokens))
    for extra, measured in runs.items():
        prompt = statistics.median(p for p, _ in measured)
        decode = statistics.median(d for _, d in measured)
        print(f"extra buffer types {'on ' if extra else 'off'}: prompt {prompt:6.1f} tok/s, "
              f"decode {decode:5.2f} tok/s ({', '.join(f'{d:.2f}' for _, d in measured)})")


if __name__ == "__main__":
    main()
