"""Hashed bags of words for the text tower: the channel that carries radiology terms across
languages once trained on Chinese / English report pairs.

A multilingual sentence encoder alone cannot tell near-template CT reports apart across
languages (multilingual-e5-small ranks the right English COV-CTR report first for 0.5 % of
Chinese ones, USE for 1.5 %): what separates them is which lobe, which pattern, which
distribution, i.e. terms. This channel gives each term a trained vector, so that
`右肺上叶` and `right upper lobe` can meet.

Tokens: English words and word pairs; Chinese jieba words (with the radiology lexicon) and
character pairs. Each token is hashed into one of `buckets` rows; a text's bag is its tokens
with weights log(1 + count).
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from rag.text.words import char_pairs, has_cjk, latin_words, words

NOT_WORD = re.compile(r"\W+")


def tokens(text: str) -> list[str]:
    """The text's tokens, marked by kind so that languages never share a bucket on purpose."""
    if has_cjk(text):
        found = ["w:" + word for word in words(text) if not NOT_WORD.fullmatch(word)]
        return found + ["c:" + pair for pair in char_pairs(NOT_WORD.sub("", text))]
    found = latin_words(text)
    return ["e:" + word for word in found] + ["p:" + a + "_" + b for a, b in zip(found, found[1:])]


def _bucket(token: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little") % buckets


@lru_cache(maxsize=1 << 16)  # training reuses each text every epoch; tokenizing costs ~1 ms
def _bag(text: str, buckets: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    counts = Counter(_bucket(token, buckets) for token in tokens(text))
    return tuple(counts), tuple(float(np.log1p(count)) for count in counts.values())


def bags(texts: Sequence[str], buckets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bucket ids, offsets, weights) of the texts, the inputs of nn.EmbeddingBag."""
    ids: list[int] = []
    offsets, weights = [], []
    for text in texts:
        offsets.append(len(ids))
        found, weighted = _bag(text, buckets)
        ids += found
        weights += weighted
    return (torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long),
            torch.tensor(weights, dtype=torch.float32))
