"""Stage-1 retrieval evaluation of an encoder (`python cli.py eval retrieval`).

Image -> report and report -> image Recall@K, MRR and median rank, overall, per domain and
per source, beside what a random ranking scores; zh -> en and en -> zh report retrieval; and
the accuracy of the encoder's domain probe. Pairs come from rag.training.encoder, split by patient /
case group (never by image); `all` evaluates every pair, for an external test set.

Queries and answers. The queries of a direction are the distinct items of one side (each
image; each distinct report text), the gallery the distinct items of the other side, and a
query's right answers are the gallery items it is paired with. Identical report texts are one
gallery item: the several images of one MedPix case, or two studies with word-for-word the
same report, share one right answer instead of competing with copies of it. The gallery text
of an image is its study's first report (as in training), so a gallery may mix languages.

Rank. A query's rank is the number of wrong gallery items scoring at least as high as its best
right answer (0 = first): exact ties count against the query, a strict, deterministic rank
that never flatters an encoder giving many items one score. Median rank is printed 1-based.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from rag.encoders.domain_probe import DomainProbe, is_class
from rag.encoders.base import Encoder, create_encoder, load_config
from rag.encoders.towers import TowersEncoder
from rag.images import ImageError, load_image
from rag.types import InputError
from rag.training.encoder import Pair, TextPair, TrainConfig, collect_pairs, collect_text_pairs

log = logging.getLogger(__name__)

KS = (1, 5, 10)
SPLITS = ("test", "val", "train", "all")
IMAGE_BATCH = 32
TEXT_BATCH = 64
SIMILARITY_ROWS = 2048  # queries scored at once: bounds the (rows, gallery) similarity block

Progress = Callable[[int, int], None]


# --- metrics: pure functions of similarities and ranks ---------------------------------------

def ranks(similarity: np.ndarray, positives: np.ndarray | None = None) -> np.ndarray:
    """0-based rank of each query's best right answer: the number of wrong gallery items in
    its row of `similarity` (Q, G) scoring at least as high (exact ties count against).

    `positives` (Q, G) marks the right answers; by default the diagonal (query i <-> item i)."""
    similarity = np.asarray(similarity, np.float32)
    if positives is None:
        positives = np.eye(*similarity.shape, dtype=bool)
    best = np.where(positives, similarity, -np.inf).max(axis=1)  # (Q,)
    return ((similarity >= best[:, None]) & ~positives).sum(axis=1)


def summarize(query_ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = KS) -> dict:
    """Recall@K, MRR, 1-based median rank and n of 0-based ranks (None when there are none)."""
    r = np.asarray(query_ranks)
    if r.size == 0:
        return {**{f"R@{k}": None for k in ks}, "MRR": None, "median_rank": None, "n": 0}
    out: dict = {f"R@{k}": float((r < k).mean()) for k in ks}
    out["MRR"] = float((1.0 / (r + 1)).mean())
    out["median_rank"] = float(np.median(r + 1))
    out["n"] = int(r.size)
    return out


def random_baseline(gallery_size: int, positives_per_query: Sequence[int] | np.ndarray,
                    ks: Sequence[int] = KS) -> dict:
    """What a uniformly random ranking scores in expectation, with `summarize`'s keys.

    With one right answer among N items: R@K = K/N, MRR = mean of 1/r over r = 1..N, median
    (N+1)/2. A query with m right answers has its best one at 0-based rank >= r with
    probability prod_{j<r} (N-m-j)/(N-j); the queries' distributions are averaged."""
    m_all = np.asarray(positives_per_query, dtype=np.int64)
    n = int(gallery_size)
    if m_all.size == 0 or n == 0:
        return summarize([], ks)
    pmf = np.zeros(n)  # over 0-based ranks, mixed over the queries
    for m, count in zip(*np.unique(np.clip(m_all, 1, n), return_counts=True)):
        j = np.arange(n - m + 1)
        survival = np.concatenate([[1.0], np.cumprod((n - m - j) / (n - j))])  # P(rank >= r)
        pmf[:n - m + 1] += count * (survival[:-1] - survival[1:])
    pmf /= m_all.size
    cdf = np.cumsum(pmf)
    lower = int(np.argmax(cdf >= 0.5 - 1e-9))  # the two middle ranks, as np.median takes them
    upper = int(np.argmax(cdf > 0.5 + 1e-9))
    out: dict = {f"R@{k}": float(min(cdf[min(k, n) - 1], 1.0)) for k in ks}
    out["MRR"] = float((pmf / np.arange(1, n + 1)).sum())
    out["median_rank"] = (lower + upper) / 2 + 1
    out["n"] = int(m_all.size)
    return out


def link(query_keys: Sequence[Hashable], answer_keys: Sequence[Hashable]):
    """Distinct queries and gallery items of pairs (query_keys[i] goes with answer_keys[i]).

    Returns the first pair index of each distinct query, of each distinct gallery item, and
    each query's right answers as gallery positions."""
    query_position: dict[Hashable, int] = {}
    gallery_position: dict[Hashable, int] = {}
    queries, gallery, answers = [], [], []
    for pair_index, (query, answer) in enumerate(zip(query_keys, answer_keys)):
        if query not in query_position:
            query_position[query] = len(queries)
            queries.append(pair_index)
            answers.append(set())
        if answer not in gallery_position:
            gallery_position[answer] = len(gallery)
            gallery.append(pair_index)
        answers[query_position[query]].add(gallery_position[answer])
    return queries, gallery, [np.asarray(sorted(a), dtype=np.int64) for a in answers]


def rank_queries(query_vectors: np.ndarray, gallery_vectors: np.ndarray,
                 answers: Sequence[np.ndarray]) -> np.ndarray:
    """Ranks of every query by cosine (the vectors are L2-normalised), in row blocks."""
    out = [np.zeros(0, np.int64)]
    for start in range(0, len(query_vectors), SIMILARITY_ROWS):
        block = query_vectors[start:start + SIMILARITY_ROWS] @ gallery_vectors.T  # (B, G)
        positives = np.zeros(block.shape, bool)
        for row, right in enumerate(answers[start:start + SIMILARITY_ROWS]):
            positives[row, right] = True
        out.append(ranks(block, positives))
    return np.concatenate(out)


def by_label(query_ranks: np.ndarray, labels: Sequence[str], ks: Sequence[int] = KS) -> dict:
    labels = np.asarray(labels, dtype=object)
    return {str(name): summarize(query_ranks[labels == name], ks) for name in sorted(set(labels))}


def direction(query_vectors: np.ndarray, gallery_vectors: np.ndarray,
              answers: Sequence[np.ndarray], groups: dict[str, Sequence[str]],
              ks: Sequence[int] = KS) -> dict:
    """One retrieval direction: overall, per group (e.g. by_domain, by_source) and random."""
    query_ranks = rank_queries(query_vectors, gallery_vectors, answers)
    result = {"overall": summarize(query_ranks, ks)}
    result |= {f"by_{name}": by_label(query_ranks, labels, ks) for name, labels in groups.items()}
    result["random"] = random_baseline(len(gallery_vectors), [len(a) for a in answers], ks)
    return result


def domain_accuracy(probe: DomainProbe | None, vectors: np.ndarray,
                    labels: Sequence[str]) -> dict | None:
    """The probe's accuracy on the images whose domain is a real class (None without a probe).
    A domain the probe never learned counts as wrong; it is listed in not_in_probe."""
    if probe is None:
        return None
    known = [i for i, label in enumerate(labels) if is_class(label)]
    truth = np.asarray([labels[i] for i in known], dtype=object)
    predicted = np.asarray(probe.predict(vectors[known]) if known else [], dtype=object)
    right = predicted == truth
    return {"overall": float(right.mean()) if known else None, "n": len(known),
            "by_domain": {str(d): {"accuracy": float(right[truth == d].mean()),
                                   "n": int((truth == d).sum())} for d in sorted(set(truth))},
            "not_in_probe": sorted(set(truth) - set(probe.classes))}


# --- encoding ---------------------------------------------------------------------------------

def _shares_backbones(encoders: Sequence[Encoder]) -> bool:
    """Towers encoders whose configs differ only in their heads: featurize once, project each."""
    if len(encoders) < 2 or not all(isinstance(e, TowersEncoder) for e in encoders):
        return False
    configs = [e.config.without_heads() for e in encoders]
    return all(config == configs[0] for config in configs)


def _encode(encoders: Sequence[Encoder], batch: list, images: bool) -> list[np.ndarray]:
    """(B, dim) vectors of one batch for each encoder."""
    if _shares_backbones(encoders):
        first = encoders[0]
        feats = first.image_features(batch) if images else first.text_features(batch)
        return [e.project_images(feats) if images else e.project_texts(feats) for e in encoders]
    return [e.encode_images(batch) if images else e.encode_texts(batch) for e in encoders]


def _encode_images(encoders: Sequence[Encoder], pairs: list[Pair], tick: Callable[[int], None]):
    """Image vectors of the readable pairs for each encoder, the readable pairs, and how many
    images could not be read (skipped, with a warning)."""
    kept, chunks, skipped = [], [[] for _ in encoders], 0
    for start in range(0, len(pairs), IMAGE_BATCH):
        images = []
        for pair in pairs[start:start + IMAGE_BATCH]:
            try:
                images.append(load_image(pair.image))
                kept.append(pair)
            except ImageError as err:
                log.warning("skipping pair: %s", err)
                skipped += 1
        if images:
            for chunk, vectors in zip(chunks, _encode(encoders, images, images=True)):
                chunk.append(vectors)
        tick(len(pairs[start:start + IMAGE_BATCH]))
    vectors = [np.concatenate(c) if c else np.zeros((0, e.dim), np.float32)
               for c, e in zip(chunks, encoders)]
    return vectors, kept, skipped


def _encode_texts(encoders: Sequence[Encoder], texts: list[str], tick: Callable[[int], None]):
    chunks: list[list[np.ndarray]] = [[] for _ in encoders]
    for start in range(0, len(texts), TEXT_BATCH):
        batch = texts[start:start + TEXT_BATCH]
        for chunk, vectors in zip(chunks, _encode(encoders, batch, images=False)):
            chunk.append(vectors)
        tick(len(batch))
    return [np.concatenate(c) if c else np.zeros((0, e.dim), np.float32)
            for c, e in zip(chunks, encoders)]


# --- the evaluation ---------------------------------------------------------------------------

def _build_encoders(name: str, compare_untrained: bool) -> list[Encoder]:
    encoder = create_encoder(name)
    if not compare_untrained:
        return [encoder]
    if not isinstance(encoder, TowersEncoder):
        raise InputError(f"encoder {name!r} has no projection heads to leave untrained; the "
                         "untrained comparison needs a towers encoder config")
    config, config_dir = load_config(name)
    return [encoder, TowersEncoder(config.without_heads(), config_dir)]


def _in_split(items: list, split: str) -> list:
    return items if split == "all" else [item for item in items if item.split == split]


def _scores(encoder: Encoder, image_vectors: np.ndarray, text_vectors: np.ndarray,
            text_row: dict[str, int], pairs: list[Pair], text_pairs: list[TextPair],
            ks: Sequence[int]) -> dict:
    """Every direction and the domain accuracy of one encoder's vectors."""
    def texts(values):
        return text_vectors[[text_row[v] for v in values]]

    primary = [pair.texts[0] for pair in pairs]
    queries, gallery, answers = link([str(p.image) for p in pairs], primary)
    image_to_report = direction(image_vectors[queries], texts([primary[i] for i in gallery]),
                                answers, {"domain": [pairs[i].domain for i in queries],
                                          "source": [pairs[i].source for i in queries]}, ks)
    queries, gallery, answers = link(primary, [str(p.image) for p in pairs])
    report_to_image = direction(texts([primary[i] for i in queries]), image_vectors[gallery],
                                answers, {"domain": [pairs[i].domain for i in queries],
                                          "source": [pairs[i].source for i in queries]}, ks)
    result = {"encoder": encoder.fingerprint, "image_to_report": image_to_report,
              "report_to_image": report_to_image}
    for name, query_side, answer_side in (("zh_to_en", "zh", "en"), ("en_to_zh", "en", "zh")):
        query_texts = [getattr(p, query_side) for p in text_pairs]
        answer_texts = [getattr(p, answer_side) for p in text_pairs]
        queries, gallery, answers = link(query_texts, answer_texts)
        result[name] = direction(texts([query_texts[i] for i in queries]),
                                 texts([answer_texts[i] for i in gallery]), answers,
                                 {"source": [text_pairs[i].source for i in queries]}, ks)
    result["domain_accuracy"] = domain_accuracy(encoder.domain_probe, image_vectors,
                                                [pair.domain for pair in pairs])
    return result


def evaluate_retrieval(corpus_dirs: Sequence[Path], split: str = "test",
                       encoder: str = "default", compare_untrained: bool = False,
                       progress: Progress | None = None, ks: Sequence[int] = KS) -> dict:
    """Evaluate an encoder's retrieval on the pairs of `split` of the given corpora; one
    JSON-ready dict (see the module docstring for what is ranked and how)."""
    started = time.perf_counter()
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    cfg = TrainConfig()
    pairs, formats = collect_pairs(corpus_dirs, cfg)
    pairs = _in_split(pairs, split)
    text_pairs = _in_split(collect_text_pairs(corpus_dirs, cfg), split)
    corpora = [str(c) for c in corpus_dirs]
    if not pairs and not text_pairs:
        raise InputError(f"no image-report or zh-en report pairs in the {split!r} split of "
                         f"{', '.join(corpora)}: use --split all to evaluate every pair (an "
                         "external test set), or give corpora whose images have reports")
    encoders = _build_encoders(encoder, compare_untrained)
    texts = list(dict.fromkeys([p.texts[0] for p in pairs] +
                               [t for p in text_pairs for t in (p.zh, p.en)]))
    total, done = len(pairs) + len(texts), 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    image_vectors, kept, skipped = _encode_images(encoders, pairs, tick)
    text_vectors = _encode_texts(encoders, texts, tick)
    text_row = {text: row for row, text in enumerate(texts)}
    scored = [_scores(e, iv, tv, text_row, kept, text_pairs, ks)
              for e, iv, tv in zip(encoders, image_vectors, text_vectors)]
    return {**scored[0], "split": split, "corpora": corpora, "formats": formats,
            "counts": {"pairs": len(pairs), "images": len(kept),
                       "reports": len({p.texts[0] for p in kept}),
                       "text_pairs": len(text_pairs)},
            "untrained": scored[1] if compare_untrained else None,
            "skipped_images": skipped, "seconds": round(time.perf_counter() - started, 1)}


# --- a markdown report ------------------------------------------------------------------------

DIRECTIONS = {"image_to_report": "image -> report", "report_to_image": "report -> image",
              "zh_to_en": "zh -> en", "en_to_zh": "en -> zh"}


def _row(label: list[str], scores: dict, ks: Sequence[int]) -> str:
    def show(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    cells = label + [str(scores["n"])] + [show(scores[f"R@{k}"]) for k in ks]
    cells += [show(scores["MRR"]), show(scores["median_rank"], 1)]
    return "| " + " | ".join(cells) + " |"


def to_markdown(result: dict, ks: Sequence[int] = KS) -> str:
    """The result as markdown tables: overall beside random (and untrained), then per group."""
    head = ["n"] + [f"R@{k}" for k in ks] + ["MRR", "median rank"]
    lines = [f"# Retrieval evaluation: {result['encoder']}", "",
             f"split {result['split']} of {', '.join(result['corpora'])}; "
             f"{result['counts']['images']} images, {result['counts']['reports']} distinct reports, "
             f"{result['counts']['text_pairs']} zh-en pairs; {result['skipped_images']} unreadable "
             f"image(s) skipped; {result['seconds']} s", "",
             "| direction | ranking | " + " | ".join(head) + " |",
             "|---" * (len(head) + 2) + "|"]
    for key, name in DIRECTIONS.items():
        lines.append(_row([name, "encoder"], result[key]["overall"], ks))
        if result.get("untrained"):
            lines.append(_row([name, "untrained heads"], result["untrained"][key]["overall"], ks))
        lines.append(_row([name, "random"], result[key]["random"], ks))
    lines += ["", "| direction | group | " + " | ".join(head) + " |",
              "|---" * (len(head) + 2) + "|"]
    for key, name in DIRECTIONS.items():
        for group in ("by_domain", "by_source"):
            for label, scores in result[key].get(group, {}).items():
                lines.append(_row([name, f"{group[3:]} {label}"], scores, ks))
    accuracy = result["domain_accuracy"]
    lines.append("")
    if accuracy is None:
        lines.append("domain probe: none (the encoder has no trained domain probe)")
    else:
        overall = "-" if accuracy["overall"] is None else f"{accuracy['overall']:.3f}"
        parts = [f"{d} {s['accuracy']:.3f} (n={s['n']})" for d, s in accuracy["by_domain"].items()]
        lines.append(f"domain probe accuracy: {overall} (n={accuracy['n']})"
                     + (f"; {', '.join(parts)}" if parts else ""))
    lines += ["", "Rank: wrong items scoring at least as high as the best right answer (ties "
              "count against); identical report texts are one gallery item. Random: the "
              "expected score of a uniformly random ranking."]
    return "\n".join(lines) + "\n"
