"""The encoder's domain classifier: a linear probe on image embeddings that names a query
image's domain (modality x body region: chest-ct, head-mr...), trained from corpus metadata
and saved beside the projection heads as `<heads>.domains.json` (plain numbers, no pickle).

Retrieval routing uses it when the encoder has one (retrievers/routing.py); `eval retrieval`
reports its accuracy on held-out images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

UNKNOWN_PREFIX = "unknown"  # "unknown-ct": the reader could not tell the region; not a class
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)  # picked on the validation split
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

    def save(self, path: Path) -> None:
        data = {"classes": self.classes, "weight": np.round(self.weight, 6).tolist(),
                "bias": np.round(self.bias, 6).tolist(), "info": self.info}
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(data), encoding="utf-8")
        temp.replace(path)

    @classmethod
    def load(cls, path: Path) -> DomainProbe:
        data = json.loads(path.read_text(encoding="utf-8"))
        weight = np.asarray(data["weight"], np.float32)
        bias = np.asarray(data["bias"], np.float32)
        if weight.shape != (len(data["classes"]), weight.shape[1]) or bias.shape != (len(weight),):
            raise ValueError(f"{path}: weight {weight.shape} / bias {bias.shape} do not match "
                             f"{len(data['classes'])} classes")
        return cls(list(data["classes"]), weight, bias, data.get("info", {}))


def probe_path(heads_path: Path) -> Path:
    return heads_path.with_name(heads_path.stem + ".domains.json")


def is_class(label: str) -> bool:
    return bool(label) and not label.startswith(UNKNOWN_PREFIX)


def train_probe(vectors: np.ndarray, labels: list[str], train: np.ndarray, val: np.ndarray,
                seed: int = 0) -> DomainProbe:
    """Multinomial logistic regression on the train rows, its weight decay picked by
    validation accuracy; rows whose label is empty or unknown-* are left out."""
    usable = np.asarray([is_class(label) for label in labels])
    train, val = train[usable[train]], val[usable[val]]
    classes = sorted({labels[i] for i in train})
    if len(classes) < 2:
        raise ValueError(f"a domain probe needs at least two domains, got {classes}")
    index = {name: i for i, name in enumerate(classes)}
    x = torch.from_numpy(np.asarray(vectors, np.float32))
    y = torch.tensor([index.get(label, -1) for label in labels])
    best: tuple[float, DomainProbe] | None = None
    for decay in WEIGHT_DECAYS:
        torch.manual_seed(seed)
        linear = torch.nn.Linear(x.shape[1], len(classes))
        optim = torch.optim.Adam(linear.parameters(), lr=0.05, weight_decay=decay)
        # classes weighted by inverse frequency: a rare domain is not drowned by chest images
        counts = torch.bincount(y[train], minlength=len(classes)).float()
        loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (len(classes) * counts))
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
            probe.info = {"weight_decay": decay, "val_accuracy": round(score, 4),
                          "train_images": int(len(train)),
                          "per_class_train": {c: int(n) for c, n in zip(classes, counts.tolist())}}
    return best[1]
