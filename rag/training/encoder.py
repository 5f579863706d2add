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
from torch import nn

from corpora.reading import read_records
from corpora.splits import TEST_FRACTION, VAL_FRACTION, group_of, split_of
from rag.manifest import file_sha256
from rag.encoders.domain_probe import probe_path, train_probe
from rag.encoders.base import load_config, normalize
from rag.encoders.towers import (TAIL_PREFIX, TAIL_STAGES, ProjectionHeads, TowersEncoder,
                                 split_heads_state)
from rag.images import ImageError, load_image
from rag.training.plots import plot_curves
from rag.types import InputError, Record

log = logging.getLogger(__name__)


@dataclass
class Pair:
    image: Path
    texts: list[str]  # every report of the image's study (e.g. English and Chinese) + caption
    group: str  # patient / case: the unit of the split
    source: str
    split: str = "train"
    domain: str = ""  # modality x region from the corpus metadata: the domain probe's label


@dataclass
class TextPair:
    """The Chinese and English versions of one report (COV-CTR, Open-i zh/en): positives of
    each other in bilingual alignment, and the zh->en / en->zh retrieval evaluation."""
    zh: str
    en: str
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
    val_fraction: float = VAL_FRACTION  # of the patients / cases (corpora.splits)
    test_fraction: float = TEST_FRACTION
    ks: tuple[int, ...] = (1, 5, 10)
    bilingual_weight: float = 3.0  # weight of the zh <-> en report loss (0: image-text only)
    init: str | None = None  # heads checkpoint to start from (fine-tuning)
    unfreeze: int = 0  # last image backbone stages trained with the heads (0: backbone frozen)
    backbone_lr: float = 1e-4  # their learning rate (pretrained weights move slowly)
    resume: bool = True  # continue from run_dir/checkpoint.pt when it is this same run
    train_fraction: float = 1.0  # a seeded share of the training patients / cases (data ablation)


@dataclass
class TrainResult:
    heads_path: Path
    history: list[dict] = field(default_factory=list)
    test_trained: dict[str, float] = field(default_factory=dict)
    test_untrained: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    domain_accuracy: dict[str, float | None] = field(default_factory=dict)
    bilingual_untrained: dict[str, float] = field(default_factory=dict)  # zh -> en, test pairs
    bilingual_trained: dict[str, float] = field(default_factory=dict)


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
                group = group_of(rec)
                split = split_of(group, cfg.val_fraction, cfg.test_fraction)
                pairs.append(Pair(rec.image_path(), texts, group, rec.source, split,
                                  rec.domain or ""))
    return pairs, formats


def collect_text_pairs(corpus_dirs: Sequence[Path], cfg: TrainConfig) -> list[TextPair]:
    """(zh, en) report pairs: one Chinese and one English report of the same study and source,
    each study once (its first report in each language)."""
    pairs = []
    for corpus in corpus_dirs:
        records, _, _ = read_records(Path(corpus), None)
        by_study: dict[tuple[str, str], dict[str, Record]] = defaultdict(dict)
        for rec in records:
            if rec.kind == "report" and rec.study and rec.lang in ("zh", "en") and rec.text.strip():
                by_study[(rec.source, rec.study)].setdefault(rec.lang, rec)
        for (source, _), langs in by_study.items():
            if "zh" in langs and "en" in langs:
                group = group_of(langs["zh"])
                pairs.append(TextPair(langs["zh"].text, langs["en"].text, group, source,
                                      split_of(group, cfg.val_fraction, cfg.test_fraction)))
    return pairs


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


def cache_text_features(encoder: TowersEncoder, texts: list[str], cache: Path) -> np.ndarray:
    """Text backbone features of `texts`, cached on disk by content key."""
    key = hashlib.sha256("|".join([encoder.text_backbone.weights_sha256, *texts])
                         .encode()).hexdigest()
    path = cache / f"text-features-{key[:16]}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    feats = np.concatenate([encoder.text_features(texts[s:s + 64])
                            for s in range(0, len(texts), 64)]) if texts else \
        np.zeros((0, encoder.text_backbone.dim), np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


@torch.no_grad()
def recall_at_k(heads: ProjectionHeads, images: np.ndarray, texts: np.ndarray,
                ks: Sequence[int], raw: Sequence[str] | None = None) -> dict[str, float]:
    """Image -> report Recall@K (and MRR): text i is the one right answer for image i."""
    if len(images) == 0:
        return {}
    img = heads.image(torch.from_numpy(images)).numpy()
    txt = heads.embed_texts(torch.from_numpy(texts), raw).numpy()
    return _ranked(normalize(img) @ normalize(txt).T, ks)


@torch.no_grad()
def text_recall_at_k(heads: ProjectionHeads, queries: np.ndarray, gallery: np.ndarray,
                     ks: Sequence[int], raw_queries: Sequence[str],
                     raw_gallery: Sequence[str]) -> dict[str, float]:
    """Text -> text Recall@K (zh -> en): gallery text i is the one right answer for query i."""
    if len(queries) == 0:
        return {}
    q = heads.embed_texts(torch.from_numpy(queries), raw_queries).numpy()
    g = heads.embed_texts(torch.from_numpy(gallery), raw_gallery).numpy()
    return _ranked(normalize(q) @ normalize(g).T, ks)


def _ranked(sims: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K and MRR when the right answer of row i is column i; an exact tie with it
    counts against it (a collapsed encoder that scores everything alike ranks last)."""
    ranks = (sims >= sims[np.arange(len(sims)), np.arange(len(sims))][:, None]).sum(1) - 1
    out = {f"R@{k}": float((ranks < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (ranks + 1)).mean())
    out["n"] = len(sims)
    return out


def _eval_set(images, texts, owner, idx: np.ndarray, raw: Sequence[str]) -> tuple:
    """One gallery text per pair: the pair's first text (its primary report). `images`: the
    image features of the `idx` pairs."""
    first = {}
    for row, pair_index in enumerate(owner):
        first.setdefault(int(pair_index), row)
    rows = [first[int(i)] for i in idx]
    return images, texts[rows], [raw[r] for r in rows]


def cache_maps(encoder: TowersEncoder, trunk: nn.Module, stages: int, pairs: list[Pair],
               ok: np.ndarray, cache: Path, progress: Callable[[int, int], None] | None = None):
    """The image backbone's maps before its last `stages` stages (the unfrozen tail's input),
    float16, cached on disk by content key; rows of unreadable images stay zero."""
    backbone = encoder.image_backbone
    key = hashlib.sha256("|".join([backbone.weights_sha256, str(backbone.image_size),
                                   f"tail-{stages}"] + [str(p.image) for p in pairs])
                         .encode()).hexdigest()
    path = cache / f"maps-{key[:16]}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    cache.mkdir(parents=True, exist_ok=True)
    temp, maps, batch = path.with_name(f".{path.name}.tmp"), None, 32
    for start in range(0, len(pairs), batch):
        rows = [i for i in range(start, min(start + batch, len(pairs))) if ok[i]]
        if rows:
            out = backbone.trunk_maps(trunk, [load_image(pairs[i].image) for i in rows])
            if maps is None:  # written as it goes: the whole set need not fit in memory
                maps = np.lib.format.open_memmap(temp, "w+", np.float16,
                                                 (len(pairs), *out.shape[1:]))
            maps[rows] = out.cpu().numpy().astype(np.float16)
        if progress:
            progress(min(start + batch, len(pairs)), len(pairs))
    if maps is None:
        raise InputError("no readable image to fine-tune the image backbone on")
    maps.flush()
    del maps
    temp.replace(path)
    return np.load(path, mmap_mode="r")


class _ImageTail:
    """The image backbone's last `stages` stages, trained with the heads (`--unfreeze`) from
    the cached maps before them: an unfrozen tail without recomputing the whole net."""

    def __init__(self, encoder: TowersEncoder, stages: int, pairs: list[Pair], ok: np.ndarray,
                 cache: Path, progress: Callable[[int, int], None] | None = None):
        trunk, self.tail = encoder.image_backbone.split(stages)
        self.stages = stages
        self.tail.requires_grad_(True)
        self.maps = cache_maps(encoder, trunk, stages, pairs, ok, cache, progress)

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        return self.tail(torch.from_numpy(np.asarray(self.maps[idx], np.float32)))

    @torch.no_grad()
    def features(self, idx: np.ndarray) -> np.ndarray:
        was = self.tail.training
        self.tail.eval()
        out = [self(idx[s:s + 128]).numpy() for s in range(0, len(idx), 128)]
        self.tail.train(was)
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    def state(self) -> dict[str, torch.Tensor]:
        return {**{TAIL_PREFIX + k: v for k, v in self.tail.state_dict().items()},
                TAIL_STAGES: torch.tensor(self.stages)}


def share_of_groups(rows: np.ndarray, groups: Sequence[str], fraction: float,
                    seed: int) -> np.ndarray:
    """The rows of a seeded `fraction` of their groups (whole patients / cases, so a smaller
    training set is still split the same way), at least one group."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"the training fraction must be in (0, 1], not {fraction}")
    names = sorted({groups[i] for i in rows})
    random.Random(seed).shuffle(names)
    keep = set(names[:max(1, round(fraction * len(names)))])
    return np.asarray([i for i in rows if groups[i] in keep], dtype=rows.dtype)


def train_heads(config_name: str, corpus_dirs: Sequence[Path], out: Path, run_dir: Path,
                cfg: TrainConfig, progress: Callable[[int, int], None] | None = None) -> TrainResult:
    from open_clip.loss import ClipLoss

    config, config_dir = load_config(config_name)
    encoder = TowersEncoder(config.without_heads(), config_dir)
    pairs, formats = collect_pairs(corpus_dirs, cfg)
    if not pairs:
        raise InputError("no image-report pairs found in the given corpora")
    images, texts, owner, ok = cache_features(encoder, pairs, run_dir / "cache", progress)
    split = np.asarray([p.split for p in pairs])
    train_idx, val_idx, test_idx = (np.flatnonzero((split == s) & ok)
                                    for s in ("train", "val", "test"))
    if cfg.train_fraction < 1.0:
        train_idx = share_of_groups(train_idx, [p.group for p in pairs], cfg.train_fraction,
                                    cfg.seed)
    texts_of = defaultdict(list)
    for row, pair_index in enumerate(owner):
        texts_of[int(pair_index)].append(row)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    heads = ProjectionHeads(images.shape[1], texts.shape[1], config.dim, config.hidden,
                            config.dropout, config.lexical_buckets)
    raw = [text for pair in pairs for text in pair.texts]  # the rows of `texts`, in order
    bilingual = _Bilingual(encoder, corpus_dirs, cfg, run_dir / "cache")
    result = TrainResult(out, counts={"pairs": len(pairs), "train": len(train_idx),
                                      "val": len(val_idx), "test": len(test_idx),
                                      **bilingual.counts()})
    test_set = _eval_set(images[test_idx], texts, owner, test_idx, raw)
    result.test_untrained = recall_at_k(heads.eval(), *test_set[:2], cfg.ks, test_set[2])
    result.bilingual_untrained = bilingual.recall(heads, "test", cfg.ks)
    tail = _ImageTail(encoder, cfg.unfreeze, pairs, ok, run_dir / "cache", progress) \
        if cfg.unfreeze else None
    if cfg.init:
        _load_init(heads, Path(cfg.init), tail)
    groups = [{"params": heads.parameters()}]
    if tail is not None:
        groups.append({"params": tail.tail.parameters(), "lr": cfg.backbone_lr})
    optim = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, cfg.epochs)
    loss_fn = ClipLoss()
    best, best_state = -1.0, None
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, checkpoint = run_dir / "train_log.jsonl", run_dir / "checkpoint.pt"
    run_key = hashlib.sha256(json.dumps([config.source, cfg.__dict__ | {"ks": list(cfg.ks)},
                                         [str(p.image) for p in pairs], len(bilingual.pairs)],
                                        default=str).encode()).hexdigest()
    first = 1
    if cfg.resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved.get("key") == run_key:
            heads.load_state_dict(saved["heads"])
            if tail is not None:
                tail.tail.load_state_dict(saved["tail"])
            optim.load_state_dict(saved["optim"])
            sched.load_state_dict(saved["sched"])
            best, best_state, result.history = saved["best"], saved["best_state"], saved["history"]
            first = saved["epoch"] + 1
            log.info("resuming from epoch %d (%s)", first, checkpoint)
    if first == 1:
        log_path.write_text("")
    for epoch in range(first, cfg.epochs + 1):
        epoch_started = time.perf_counter()
        heads.train()
        if tail is not None:
            tail.tail.train()
        order = np.random.default_rng(cfg.seed + epoch).permutation(train_idx)
        losses = []
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:
                continue
            rows = [random.choice(texts_of[int(i)]) for i in idx]  # one text per image
            feats = tail(idx) if tail is not None else torch.from_numpy(images[idx])
            img, txt, scale = heads(feats, torch.from_numpy(texts[rows]), [raw[r] for r in rows])
            loss = loss_fn(img, txt, scale)
            if cfg.bilingual_weight > 0:
                loss = loss + cfg.bilingual_weight * bilingual.loss(heads, loss_fn, scale,
                                                                    cfg.batch_size)
            optim.zero_grad()
            loss.backward()
            optim.step()
            with torch.no_grad():
                heads.logit_scale.clamp_(0, np.log(100))
            losses.append(loss.item())
        sched.step()
        heads.eval()
        val_set = _eval_set(tail.features(val_idx) if tail is not None else images[val_idx],
                            texts, owner, val_idx, raw)
        val = recall_at_k(heads, *val_set[:2], cfg.ks, val_set[2])
        val_bilingual = bilingual.recall(heads, "val", cfg.ks)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val,
               "val_zh_to_en": val_bilingual, "temperature": 1 / heads.logit_scale.exp().item(),
               "seconds": round(time.perf_counter() - epoch_started, 2)}
        result.history.append(row)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        score = val.get("R@10", 0.0) + val.get("MRR", 0.0) + val_bilingual.get("MRR", 0.0)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in heads.state_dict().items()}
            if tail is not None:  # the fine-tuned stages are part of the trained encoder
                best_state |= {k: v.clone() for k, v in tail.state().items()}
        log.info("epoch %d loss %.4f val %s", epoch, row["loss"], val)
        temp = checkpoint.with_name(".checkpoint.pt.tmp")  # written whole, then renamed
        torch.save({"key": run_key, "epoch": epoch, "heads": heads.state_dict(),
                    "tail": tail.tail.state_dict() if tail is not None else None,
                    "optim": optim.state_dict(), "sched": sched.state_dict(), "best": best,
                    "best_state": best_state, "history": result.history}, temp)
        temp.replace(checkpoint)
    plot_curves({"train loss": [r["loss"] for r in result.history],
                 "val image->report R@10": [r["val"].get("R@10", 0.0) for r in result.history],
                 "val zh->en R@1": [r["val_zh_to_en"].get("R@1", 0.0) for r in result.history
                                    if r["val_zh_to_en"]]},
                run_dir / "train_curves.png", f"stage-1 training of {config_name}")
    # stored in float16 (half the size, no measurable change): measure what is stored
    stored = {k: v.half() if v.is_floating_point() else v for k, v in best_state.items()}
    heads_state, _, tail_state = split_heads_state({k: v.float() for k, v in stored.items()})
    heads.load_state_dict(heads_state)
    heads.eval()
    if tail is not None:  # the test split and the probe read the fine-tuned features
        tail.tail.load_state_dict(tail_state)
        readable = np.flatnonzero(ok)
        images = images.copy()
        images[readable] = tail.features(readable)
        test_set = _eval_set(images[test_idx], texts, owner, test_idx, raw)
    result.test_trained = recall_at_k(heads, *test_set[:2], cfg.ks, test_set[2])
    result.bilingual_trained = bilingual.recall(heads, "test", cfg.ks)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(stored, out)
    _train_domain_probe(heads, images, pairs, (train_idx, val_idx, test_idx), out, cfg, result)
    _write_training_manifest(out, config_name, formats, pairs, cfg, result)
    return result


def _load_init(heads: ProjectionHeads, path: Path, tail: _ImageTail | None = None) -> None:
    """Start from saved heads; parts they lack (e.g. the lexical channel) keep their init.
    Heads trained with unfrozen image stages start from those stages too, and only with the
    same --unfreeze: they read what those stages make. Heads of the frozen backbone can start
    any --unfreeze (the stages start from the backbone's own weights)."""
    if not path.exists():
        raise InputError(f"--init checkpoint not found: {path}")
    state, stages, tail_state = split_heads_state(
        {k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()})
    if stages and stages != (tail.stages if tail is not None else 0):
        raise InputError(f"{path} was trained with --unfreeze {stages}: fine-tune it with the "
                         f"same --unfreeze {stages}")
    if tail is not None and stages:
        tail.tail.load_state_dict(tail_state)
    own = heads.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise InputError(f"{path} does not fit this encoder config: {', '.join(wrong)} differ "
                         "in shape (trained for another backbone or dim?)")
    missing, _ = heads.load_state_dict(state, strict=False)
    if missing:
        log.info("--init %s: kept the initial values of %s", path, ", ".join(missing))


class _Bilingual:
    """The (zh, en) report pairs of the corpora, their backbone features, and the symmetric
    InfoNCE loss that makes each the positive of the other (the text tower's only)."""

    def __init__(self, encoder: TowersEncoder, corpus_dirs: Sequence[Path], cfg: TrainConfig,
                 cache: Path):
        self.pairs = collect_text_pairs(corpus_dirs, cfg) if cfg.bilingual_weight > 0 else []
        feats = cache_text_features(encoder, [p.zh for p in self.pairs] +
                                    [p.en for p in self.pairs], cache)
        self.zh, self.en = feats[:len(self.pairs)], feats[len(self.pairs):]
        self.split = np.asarray([p.split for p in self.pairs])
        self.train = np.flatnonzero(self.split == "train")
        self.rng = np.random.default_rng(cfg.seed)

    def counts(self) -> dict[str, int]:
        return {f"bilingual_{name}": int((self.split == name).sum())
                for name in ("train", "val", "test")}

    def loss(self, heads: ProjectionHeads, loss_fn, scale: torch.Tensor, size: int):
        if len(self.train) < 2:
            return torch.zeros(())
        rows = self.rng.choice(self.train, min(size, len(self.train)), replace=False)
        zh = heads.embed_texts(torch.from_numpy(self.zh[rows]), [self.pairs[r].zh for r in rows])
        en = heads.embed_texts(torch.from_numpy(self.en[rows]), [self.pairs[r].en for r in rows])
        return loss_fn(nn.functional.normalize(zh, dim=-1), nn.functional.normalize(en, dim=-1),
                       scale)

    def recall(self, heads: ProjectionHeads, split: str, ks: Sequence[int]) -> dict[str, float]:
        rows = np.flatnonzero(self.split == split)
        heads.eval()
        return text_recall_at_k(heads, self.zh[rows], self.en[rows], ks,
                                [self.pairs[r].zh for r in rows], [self.pairs[r].en for r in rows])


def _train_domain_probe(heads: ProjectionHeads, images: np.ndarray, pairs: list[Pair],
                        splits: tuple[np.ndarray, ...], out: Path, cfg: TrainConfig,
                        result: TrainResult) -> None:
    """The linear domain probe on the trained image embeddings, saved beside the heads."""
    with torch.no_grad():
        vectors = normalize(heads.image(torch.from_numpy(images)).numpy())
    labels = [pair.domain for pair in pairs]
    train_idx, val_idx, test_idx = splits
    try:
        probe = train_probe(vectors, labels, train_idx, val_idx, cfg.seed)
    except ValueError as err:
        log.warning("no domain probe: %s", err)
        probe_path(out).unlink(missing_ok=True)
        return
    result.domain_accuracy = {
        "train": probe.accuracy(vectors[train_idx], [labels[i] for i in train_idx]),
        "val": probe.info["val_accuracy"],
        "test": probe.accuracy(vectors[test_idx], [labels[i] for i in test_idx])}
    probe.info["test_accuracy"] = result.domain_accuracy["test"]
    probe.save(probe_path(out))


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
        "test_zh_to_en_report": {"trained": result.bilingual_trained,
                                 "untrained": result.bilingual_untrained},
        "domain_probe": {"file": probe_path(out).name, "accuracy": result.domain_accuracy}
        if result.domain_accuracy else None,
        "best_epoch": max(result.history, key=lambda r: r["val"].get("R@10", 0)
                          + r["val"].get("MRR", 0))["epoch"],
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
