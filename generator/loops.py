"""Greedy decoding's failure mode on hard images: the answer falls into a loop ("the anterior
and posterior of the anterior and posterior of ..."). `loop_period` spots a tail that repeats,
`LoopStop` ends generation there, and `cut_loop` keeps one copy of the repeated part.

A loop is a tail at least `min_span` tokens long that is periodic with a period of at most
`max_period` tokens and holds at least two whole copies: a sentence written twice in a row, or
a short phrase written many times. Both are degenerate in a report; a phrase that recurs with
other words between (the same finding under "CT:" and "MRI:") is not a loop.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

MIN_SPAN = 16
MAX_PERIOD = 48
LOOP = "loop"  # the reason a generator gives for an answer cut by the loop guard
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？\n]")


def loop_period(ids: Sequence[int], min_span: int = MIN_SPAN,
                max_period: int = MAX_PERIOD) -> int | None:
    """The shortest period p whose repetition makes up the last max(2p, min_span) tokens."""
    n = len(ids)
    for period in range(1, max_period + 1):
        span = max(2 * period, min_span)
        if span > n:
            break
        if all(ids[i] == ids[i - period] for i in range(n - span + period, n)):
            return period
    return None


def cut_loop(ids: Sequence[int], period: int) -> list[int]:
    """`ids` up to the end of the first copy of the repeating tail of that period."""
    start = len(ids) - period  # walk back while the sequence stays periodic
    while start > 0 and ids[start - 1] == ids[start - 1 + period]:
        start -= 1
    return list(ids[:start + period])


def last_whole_sentence(text: str) -> str:
    """`text` up to its last sentence end; all of it when it has none."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[:ends[-1].end()] if ends else text


class LoopStop:
    """A transformers stopping criterion: stop each sequence whose tail is a loop."""

    def __init__(self, min_span: int = MIN_SPAN, max_period: int = MAX_PERIOD):
        self.min_span = min_span
        self.max_period = max_period
        self.found: int | None = None

    def __call__(self, input_ids, scores=None, **_):
        import torch

        done = []
        for row in input_ids.tolist():
            period = loop_period(row, self.min_span, self.max_period)
            self.found = self.found or period
            done.append(period is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
