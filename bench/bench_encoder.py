"""Encoding throughput of an encoder config, and the time stage-1 training takes.

    python bench/bench_encoder.py                                  # default encoder, no training
    python bench/bench_encoder.py --train ../shared/data/cov-ctr --epochs 20
    python bench/bench_encoder.py --train ../shared/data/cov-ctr --epochs 5 --unfreeze 6

Prints images/s (batches of 32, 224 px synthetic images, so decoding files is not counted),
texts/s for English and Chinese report sentences (batches of 64) on this machine's CPU, or the
GPU when torch sees one, and with --train: seconds to cache the backbone features of the
corpora's pairs, then seconds per training epoch over the cached features (with --unfreeze N,
over the maps cached before the image backbone's last N stages, which then train too).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.encoders.base import create_encoder  # noqa: E402
from rag.training.encoder import TrainConfig, train_heads  # noqa: E402

EN = ("Patchy ground-glass opacity in the right lower lobe, consistent with viral pneumonia. "
      "No pleural effusion.")
ZH = "右肺下叶见斑片状磨玻璃影，考虑病毒性肺炎。双侧胸腔未见积液。"


def rate(call, items: int, repeats: int = 3) -> float:
    """Items per second of the best of `repeats` timed calls (after one warm-up)."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--train", nargs="*", default=[], help="corpus folders to train on")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--unfreeze", type=int, default=0, help="last image stages trained")
    args = parser.parse_args()

    encoder = create_encoder(args.encoder)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores, " \
                                                       f"{torch.get_num_threads()} threads)"
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (224, 224), dtype=np.uint8)).convert("RGB")
              for _ in range(args.images)]
    print(f"encoder {encoder.fingerprint} on {device}")
    print("| what | batch | per second |")
    print("|---|---|---|")
    print(f"| images | {args.images} | {rate(lambda: encoder.encode_images(images), args.images):.1f} |")
    for lang, text in (("en", EN), ("zh", ZH)):
        texts = [f"{text} ({i})" for i in range(args.texts)]  # distinct: no cache helps
        print(f"| {lang} texts | {args.texts} | "
              f"{rate(lambda t=texts: encoder.encode_texts(t), args.texts, 1):.1f} |")
    if args.train:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as run:
            started = time.perf_counter()
            result = train_heads(args.encoder, [Path(c) for c in args.train],
                                 Path(run) / "heads.pt", Path(run),
                                 TrainConfig(epochs=args.epochs, resume=False,
                                             unfreeze=args.unfreeze))
            total = time.perf_counter() - started
        epoch_s = float(np.mean([row["seconds"] for row in result.history]))
        print(f"\ntraining on {result.counts}: {total:.0f} s in all, about {epoch_s:.1f} s per "
              f"epoch over cached features, {args.unfreeze} image stages unfrozen (the rest is "
              "caching backbone features and maps)")


if __name__ == "__main__":
    main()
