"""What the domain probe can reach from the frozen image backbone: held-out accuracy of a
linear probe (rag.encoders.domain_probe.train_probe: weight decay and class weighting picked on the
validation split) on several inputs, over the same train / val / test split as `train encoder`.

    python bench/ablate_domain_probe.py ../shared/data/cov-ctr ../shared/data/medpix-2.0 \\
        ../shared/data/covid-chestxray ../shared/data/openi-iu-xray

Inputs: the encoder's image embedding (what the shipped probe reads), the backbone's pooled
last map (frozen features), and the mean and standard deviation of every stage's map with the
last map's mean and max (what earlier stages add: texture and intensity, which tell CT from
MR). Prints test accuracy overall and per source, and the commonest confusions.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.encoders.domain_probe import is_class, train_probe  # noqa: E402
from rag.encoders.base import create_encoder  # noqa: E402
from rag.images import ImageError, load_image  # noqa: E402
from rag.training.encoder import TrainConfig, collect_pairs  # noqa: E402


@torch.no_grad()
def stage_features(encoder, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embedding, pooled last map, per-stage statistics) of a batch of images."""
    backbone = encoder.image_backbone
    x = backbone.preprocess(images).to(backbone.device)
    stats = []
    for stage in backbone.stages:
        x = stage(x)
        stats += [x.mean(dim=(2, 3)), x.std(dim=(2, 3))]
    pooled = x.mean(dim=(2, 3))
    stats += [x.amax(dim=(2, 3))]
    return (encoder.project_images(pooled.cpu().numpy()), pooled.cpu().numpy(),
            torch.cat(stats, 1).cpu().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--encoder", default="default")
    parser.add_argument("--limit", type=int, default=0, help="a seeded sample of N images only")
    args = parser.parse_args()
    encoder = create_encoder(args.encoder)
    if not encoder.image_backbone.stages:
        sys.exit("this encoder's image backbone has no stages to read (efficientnet-lite0 has)")
    pairs, _ = collect_pairs(args.corpora, TrainConfig())
    pairs = [p for p in pairs if is_class(p.domain)]
    if args.limit:
        keep = np.random.default_rng(0).choice(len(pairs), min(args.limit, len(pairs)), False)
        pairs = [pairs[i] for i in sorted(keep)]
    rows, feats = [], []
    for start in range(0, len(pairs), 32):
        batch = []
        for i in range(start, min(start + 32, len(pairs))):
            try:
                batch.append(load_image(pairs[i].image))
                rows.append(i)
            except ImageError as err:
                print(f"skipped: {err}", file=sys.stderr)
        if batch:
            feats.append(stage_features(encoder, batch))
    pairs = [pairs[i] for i in rows]
    labels = [p.domain for p in pairs]
    split = np.asarray([p.split for p in pairs])
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    inputs = {name: np.concatenate([f[k] for f in feats]) for k, name in
              enumerate(("encoder embedding", "backbone pooled map", "all stages' statistics"))}
    print(f"{len(pairs)} images: {len(train)} train, {len(val)} val, {len(test)} test\n")
    print("| probe input | dim | val | test | " + " | ".join(
        sorted({pairs[i].source for i in test})) + " |")
    print("|---|---|---|---|" + "---|" * len({pairs[i].source for i in test}))
    confusions = {}
    for name, x in inputs.items():
        if name != "encoder embedding":  # raw features: standardised on the training rows
            x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
        probe = train_probe(x.astype(np.float32), labels, train, val)
        predicted = probe.predict(x[test])
        by_source = {}
        for source in sorted({pairs[i].source for i in test}):
            mine = [j for j, i in enumerate(test) if pairs[i].source == source]
            by_source[source] = np.mean([predicted[j] == labels[test[j]] for j in mine])
        accuracy = probe.accuracy(x[test], [labels[i] for i in test])
        print(f"| {name} | {x.shape[1]} | {probe.info['val_accuracy']:.3f} | {accuracy:.3f} | "
              + " | ".join(f"{v:.3f}" for v in by_source.values()) + " |")
        confusions[name] = Counter((labels[i], predicted[j]) for j, i in enumerate(test)
                                   if labels[i] != predicted[j])
    for name, counts in confusions.items():
        print(f"\n{name}: commonest confusions (label -> predicted): " + ", ".join(
            f"{a} -> {b} ({n})" for (a, b), n in counts.most_common(6)))


if __name__ == "__main__":
    main()
