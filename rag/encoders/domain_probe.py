"""The encoder's domain classifier: a linear probe on image embeddings that names a query
image's domain (modality x body region: chest-ct, head-mr...), trained from corpus metadata
and saved beside the projection heads as `<heads>.domains.json` (plain numbers, no pickle).

Retrieval routing uses it when the encoder has one (retrievers/routing.py); `eval retrieval`
reports its accuracy on held-out images.

File versions: 1 (no "version" key) and 2 hold the same numbers; 2 also names what the probe
reads ("input": the encoder's image embedding) and its dim, so that a probe is never applied to
vectors of another kind or size. A newer version is refused with an error that says so.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

UNKNOWN_PREFIX = "unknown"  # "unknown-ct": the reader could not tell the region; not a class
FORMAT_VERSION = 2
INPUT = "image-embedding"  # what the probe reads: the encoder's (N, dim) normalised image vectors
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)  # picked on the validation split, with the class weighting
# "balanced": classes weighted by inverse frequency, so a rare domain is not drowned by chest
# images; "none": every image counts once. On the shared data "none" won on validation
# (0.857 against 0.808 for "balanced"; test 0.873 and 0.868): the rare MedPix domains are the
# noisiest, and weighting them up costs the common ones more than it gains.
CLASS_WEIGHTINGS = ("balanced", "none")
STEPS = 300


@dataclass
class DomainProbe:
    classes: list[str]
    weight: np.ndarray  # (C, dim)
    bias: np.ndarray  # (C,)
    info: dict = field(default_factory=dict)  # how it was trained and what it scored

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(N, C) softmax probabilities for (N, dim) image embeddings."""
        logits = np.asarray(vectors, np.float32) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, vectors: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.probabilities(vectors).argmax(axis=1)]

    def accuracy(self, vectors: np.ndarray, labels: list[str]) -> float | None:
        known = [i for i, label in enumerate(labels) if label in self.classes]
        if not known:
            return None
        predicted = self.predict(np.asarray(vectors)[known])
        return float(np.mean([predicted[j] == labels[i] for j, i in enumerate(known)]))

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def save(self, path: Path) -> None:
        data = {"version": FORMAT_VERSION, "input": INPUT, "dim": self.dim,
                "classes": self.classes, "weight": np.round(self.weight, 6).tolist(),
                "bias": np.round(self.bias, 6).tolist(), "info": self.info}
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(data), encoding="utf-8")
        temp.replace(path)

    @classmethod
    def load(cls, path: Path, dim: int | None = None) -> DomainProbe:
        """A saved probe; `dim`: the size of the embeddings it will be given, checked."""
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{path}: domain probe file version {version!r}; this caselens "
                             f"reads versions up to {FORMAT_VERSION} (written by a newer one?)")
        if data.get("input", INPUT) != INPUT:
            raise ValueError(f"{path}: a domain probe on {data['input']!r}; this caselens "
                             f"applies probes to {INPUT!r} only")
        weight = np.asarray(data["weight"], np.float32)
        bias = np.asarray(data["bias"], np.float32)
        if weight.shape != (len(data["classes"]), weight.shape[1]) or bias.shape != (len(weight),):
            raise ValueError(f"{path}: weight {weight.shape} / bias {bias.shape} do not match "
                             f"{len(data['classes'])} classes")
        if dim is not None and weight.shape[1] != dim:
            raise ValueError(f"{path}: a domain probe on {weight.shape[1]}-d vectors, but the "
                             f"encoder's embeddings are {dim}-d (trained with other heads?)")
        return cls(list(data["classes"]), weight, bias, data.get("info", {}))


def probe_path(heads_path: Path) -> Path:
    return heads_path.with_name(heads_path.stem + ".domains.json")


def is_class(label: str) -> bool:
    return bool(label) and not label.startswith(UNKNOWN_PREFIX)


def train_probe(vectors: np.ndarray, labels: list[str], train: np.ndarray, val: np.ndarray,
                seed: int = 0) -> DomainProbe:
    """Multinomial logistic regression on the train rows, its weight decay and class weighting
    picked by validation accuracy; rows whose label is empty or unknown-* are left out."""
    usable = np.asarray([is_class(label) for label in labels])
    train, val = train[usable[train]], val[usable[val]]
    classes = sorted({labels[i] for i in train})
    if len(classes) < 2:
        raise ValueError(f"a domain probe needs at least two domains, got {classes}")
    index = {name: i for i, name in enumerate(classes)}
    x = torch.from_numpy(np.asarray(vectors, np.float32))
    y = torch.tensor([index.get(label, -1) for label in labels])
    counts = torch.bincount(y[train], minlength=len(classes)).float()
    class_weights = {"balanced": counts.sum() / (len(classes) * counts), "none": None}
    best: tuple[float, DomainProbe] | None = None
    for weighting, decay in ((w, d) for w in CLASS_WEIGHTINGS for d in WEIGHT_DECAYS):
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], len(classes))
        optim = torch.optim.Adam(linear.parameters(), lr=0.05, weight_decay=decay)
        loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights[weighting])
        for _ in range(STEPS):
            optim.zero_grad()
            loss_fn(linear(x[train]), y[train]).backward()
            optim.step()
        probe = DomainProbe(classes, linear.weight.detach().numpy().copy(),
                            linear.bias.detach().numpy().copy())
        score = probe.accuracy(vectors[val], [labels[i] for i in val])
        score = -1.0 if score is None else score
        if best is None or score > best[0]:
            best = (score, probe)
            probe.info = {"weight_decay": decay, "class_weighting": weighting,
                          "val_accuracy": round(score, 4),
                          "train_images": int(len(train)),
                          "per_class_train": {c: int(n) for c, n in zip(classes, counts.tolist())}}
    return best[1]
