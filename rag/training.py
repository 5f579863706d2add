"""Stage 1: contrastive alignment of the projection heads on image-report pairs.

Backbone features are computed once and cached, so head training runs in minutes on a CPU.
Pairs are split by patient / case group (never by image) into train, validation and test;
the best epoch is chosen on validation and the test split is only measured.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rag.backbones import file_sha256
from rag.building import read_records
from rag.encoder import ProjectionHeads, TowersEncoder, load_config, normalize
from rag.images import ImageError, load_image
from rag.types import Record

log = logging.getLogger(__name__)


@dataclass
class Pair:
    image: Path
    texts: list[str]  # every report of the image's study (e.g. English and Chinese) + caption
    group: str  # patient / case: the unit of the split
    source: str
    split: str = "train"


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.5
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    ks: tuple[int, ...] = (1, 5, 10)


@dataclass
class TrainResult:
    heads_path: Path
    history: list[dict] = field(default_factory=list)
    test_trained: dict[str, float] = field(default_factory=dict)
    test_untrained: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def split_of(group: str, cfg: TrainConfig) -> str:
    bucket = int(hashlib.sha1(group.encode("utf-8")).hexdigest()[:8], 16) % 1000 / 1000
    if bucket < cfg.test_fraction:
        return "test"
    return "val" if bucket < cfg.test_fraction + cfg.val_fraction else "train"


def collect_pairs(corpus_dirs: Sequence[Path], cfg: TrainConfig) -> tuple[list[Pair], list[str]]:
    """Image records paired with every text of their study (reports in each language and
    the image's own caption)."""
    pairs, formats = [], []
    for corpus in corpus_dirs:
        records, _, found = read_records(Path(corpus), None)
        formats += [f"{corpus}:{f}" for f in found]
        reports: dict[str, list[Record]] = defaultdict(list)
        for rec in records:
            if rec.kind == "report" and rec.study:
                reports[rec.study].append(rec)
        for rec in records:
            if rec.kind != "image":
                continue
            texts = [r.text for r in reports.get(rec.study, [])]
            texts += [rec.text] if rec.text.strip() else []
            if texts:
                group = f"{rec.source}:{rec.meta.get('split_group') or rec.study}"
                pairs.append(Pair(rec.image_path(), texts, group, rec.source,
                                  split_of(group, cfg)))
    return pairs, formats


def cache_features(encoder: TowersEncoder, pairs: list[Pair], cache: Path,
                   progress: Callable[[int, int], None] | None = None):
    """Backbone features of every image and text, cached on disk by content key."""
    key = hashlib.sha256("|".join([encoder.image_backbone.weights_sha256,
                                   encoder.text_backbone.weights_sha256,
                                   str(encoder.image_backbone.image_size)] +
                                  [f"{p.image}:{p.texts}" for p in pairs]).encode()).hexdigest()
    path = cache / f"features-{key[:16]}.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        return data["images"], data["texts"], data["owner"], data["ok"]
    batch, image_feats, ok = 32, [], np.ones(len(pairs), bool)
    for start in range(0, len(pairs), batch):
        imgs = []
        for i, pair in enumerate(pairs[start:start + batch], start):
            try:
                imgs.append(load_image(pair.image))
            except ImageError as err:
                log.warning("skipping pair: %s", err)
                ok[i] = False
                imgs.append(None)
        good = [img for img in imgs if img is not None]
        feats = encoder.image_features(good) if good else np.zeros((0, 1), np.float32)
        it = iter(feats)
        image_feats += [next(it) if img is not None else None for img in imgs]
        if progress:
            progress(min(start + batch, len(pairs)), len(pairs) * 2)
    dim = encoder.image_backbone.dim
    images = np.stack([f if f is not None else np.zeros(dim, np.float32) for f in image_feats])
    flat = [(i, text) for i, pair in enumerate(pairs) for text in pair.texts]
    texts = np.concatenate([encoder.text_features([t for _, t in flat[s:s + 64]])
                            for s in range(0, len(flat), 64)])
    owner = np.asarray([i for i, _ in flat], dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, texts=texts, owner=owner, ok=ok)
    return images, texts, owner, ok


@torch.no_grad()
def recall_at_k(heads: ProjectionHeads, images: np.ndarray, texts: np.ndarray,
                ks: Sequence[int]) -> dict[str, float]:
    """Image -> report Recall@K (and MRR): text i is the one right answer for image i."""
    if len(images) == 0:
        return {}
    img = heads.image(torch.from_numpy(images)).numpy()
    txt = heads.text(torch.from_numpy(texts)).numpy()
    sims = normalize(img) @ normalize(txt).T  # (N, N)
    ranks = (sims > sims[np.arange(len(sims)), np.arange(len(sims))][:, None]).sum(1)
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (ranks + 1)).mean())
    out["n"] = len(images)
    return out


def _eval_set(images, texts, owner, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One gallery text per pair: the pair's first text (its primary report)."""
    first = {}
    for row, pair_index in enumerate(owner):
        first.setdefault(int(pair_index), row)
    return images[idx], texts[[first[int(i)] for i in idx]]


def train_heads(config_name: str, corpus_dirs: Sequence[Path], out: Path, run_dir: Path,
                cfg: TrainConfig, progress: Callable[[int, int], None] | None = None) -> TrainResult:
    from open_clip.loss import ClipLoss

    config, config_dir = load_config(config_name)
    encoder = TowersEncoder({**config, "heads": None}, config_dir)
    pairs, formats = collect_pairs(corpus_dirs, cfg)
    if not pairs:
        raise ValueError("no image-report pairs found in the given corpora")
    images, texts, owner, ok = cache_features(encoder, pairs, run_dir / "cache", progress)
    split = np.asarray([p.split for p in pairs])
    train_idx, val_idx, test_idx = (np.flatnonzero((split == s) & ok)
                                    for s in ("train", "val", "test"))
    texts_of = defaultdict(list)
    for row, pair_index in enumerate(owner):
        texts_of[int(pair_index)].append(row)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    heads = ProjectionHeads(images.shape[1], texts.shape[1], int(config["dim"]),
                            int(config.get("hidden", 512)), float(config.get("dropout", 0.0)))
    result = TrainResult(out, counts={"pairs": len(pairs), "train": len(train_idx),
                                      "val": len(val_idx), "test": len(test_idx)})
    test_set = _eval_set(images, texts, owner, test_idx)
    val_set = _eval_set(images, texts, owner, val_idx)
    result.test_untrained = recall_at_k(heads.eval(), *test_set, cfg.ks)
    optim = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.epochs)
    loss_fn = ClipLoss()
    best, best_state = -1.0, None
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train_log.jsonl"
    log_path.write_text("")
    for epoch in range(1, cfg.epochs + 1):
        heads.train()
        order = np.random.default_rng(cfg.seed + epoch).permutation(train_idx)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:
                continue
            rows = [random.choice(texts_of[int(i)]) for i in idx]  # one text per image
            img, txt, scale = heads(torch.from_numpy(images[idx]), torch.from_numpy(texts[rows]))
            loss = loss_fn(img, txt, scale)
            optim.zero_grad()
            loss.backward()
            optim.step()
            with torch.no_grad():
                heads.logit_scale.clamp_(0, np.log(100))
            losses.append(loss.item())
        sched.step()
        heads.eval()
        val = recall_at_k(heads, *val_set, cfg.ks)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val,
               "temperature": 1 / heads.logit_scale.exp().item()}
        result.history.append(row)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        score = val.get("R@10", 0.0) + val.get("MRR", 0.0)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in heads.state_dict().items()}
        log.info("epoch %d loss %.4f val %s", epoch, row["loss"], val)
    # stored in float16 (half the size, no measurable change): measure what is stored
    stored = {k: v.half() for k, v in best_state.items()}
    heads.load_state_dict({k: v.float() for k, v in stored.items()})
    heads.eval()
    result.test_trained = recall_at_k(heads, *test_set, cfg.ks)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stored, out)
    _write_training_manifest(out, config_name, formats, pairs, cfg, result)
    return result


def _write_training_manifest(out: Path, config_name: str, formats: list[str], pairs: list[Pair],
                             cfg: TrainConfig, result: TrainResult) -> None:
    per_source: dict[str, int] = defaultdict(int)
    for pair in pairs:
        per_source[pair.source] += 1
    manifest = {
        "heads": out.name, "sha256": file_sha256(str(out)), "encoder_config": config_name,
        "command": "python cli.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        if Path(sys.argv[0]).name == "cli.py" else None,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {"corpora": formats, "pairs_per_source": dict(per_source),
                 "split": "by patient / case group (sha1 bucket)", **result.counts},
        "settings": cfg.__dict__ | {"ks": list(cfg.ks)},
        "test_image_to_report": {"trained": result.test_trained,
                                 "untrained": result.test_untrained},
        "best_epoch": max(result.history, key=lambda r: r["val"].get("R@10", 0)
                          + r["val"].get("MRR", 0))["epoch"],
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
