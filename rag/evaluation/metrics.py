"""Natural-language generation metrics for generated reports, English and Chinese.

BLEU-1..4, ROUGE-L, METEOR and CIDEr-D, with one reference per hypothesis, computed the way
the report-generation literature (R2Gen and successors, via pycocoevalcap) computes them:

* BLEU-n: corpus-level (clipped n-gram counts and lengths pooled over all pairs, one brevity
  penalty), nltk's `corpus_bleu` with uniform weights over 1..n and no smoothing.
* ROUGE-L: pycocoevalcap's LCS-based F-measure with beta = 1.2, averaged over pairs.
* METEOR: nltk's `meteor_score` averaged over pairs, *without its synonym module*: nltk's
  WordNet data is not installed here (and cannot be fetched), so a stand-in WordNet with no
  synsets is passed and only exact and Porter-stem matches count. Scores are therefore a
  little lower than with WordNet, and not comparable with pycocoevalcap's Java METEOR 1.5.
* CIDEr-D: pycocoevalcap's CIDEr-D, re-implemented: n = 1..4 tf-idf vectors with document
  frequencies from the references of the evaluated set, hypothesis counts clipped to the
  reference's, a Gaussian length penalty with sigma = 6, times 10. With a single pair every
  idf is log(1) = 0, so CIDEr-D needs several pairs to mean anything.

Tokens (rag.text.words): English lowercase words and numbers; Chinese either characters
("char") or jieba words with the radiology lexicon ("word" or "jieba"). An empty hypothesis
(or reference) scores 0 for its pair.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter

from rag.text.words import jieba_words, metric_characters, metric_words

LANGUAGES = ("en", "zh")
ZH_MODES = ("char", "word", "jieba")
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2


def tokens(text: str, lang: str, mode: str = "word") -> list[str]:
    """The tokens of `text`, lowercased, punctuation and whitespace dropped.

    English ("en", mode "word"): words and numbers ("3.5" stays whole). Chinese ("zh"):
    mode "char" makes each CJK character a token and keeps latin words and numbers whole;
    mode "word" or "jieba" uses jieba's segmentation (the project's one tokenizer, with the
    radiology lexicon, whatever ran before).
    """
    if lang not in LANGUAGES:
        raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
    text = text.lower()
    if lang == "en":
        if mode != "word":
            raise ValueError(f"English text is tokenized in mode 'word' only, got {mode!r}")
        return metric_words(text)
    if mode not in ZH_MODES:
        raise ValueError(f"Chinese mode must be one of {ZH_MODES}, got {mode!r}")
    if mode == "char":
        return metric_characters(text)
    return jieba_words(text)


def _require_nltk() -> None:
    """nltk is optional for the rest of caselens; say how to get it when BLEU or METEOR need it."""
    try:
        import nltk  # noqa: F401
    except ImportError as error:
        raise ImportError("BLEU and METEOR need nltk: pip install 'nltk>=3.9'") from error


def _bleu(hypotheses: list[list[str]], references: list[list[str]], n: int) -> float:
    """Corpus BLEU-n (uniform weights over 1..n), 0.0 when nothing matches.

    nltk divides each hypothesis's n-gram matches by at least 1, so a hypothesis shorter than
    n words (or empty) lowers BLEU-n a little more than pycocoevalcap's counting does.
    """
    _require_nltk()
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns when some n-gram order has no match
        return float(corpus_bleu([[ref] for ref in references], hypotheses, weights=(1.0 / n,) * n))


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: list[str], reference: list[str], beta: float = ROUGE_BETA) -> float:
    """pycocoevalcap's ROUGE-L of one tokenized pair: LCS F-measure weighting recall by beta."""
    lcs = _lcs_length(hypothesis, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hypothesis), lcs / len(reference)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class _NoSynonyms:
    """Stands in for nltk's WordNet (whose data is not installed): no word has synonyms."""

    def synsets(self, word: str) -> list:
        return []


def meteor(hypothesis: list[str], reference: list[str]) -> float:
    """nltk METEOR of one tokenized pair with exact and stem matches only (no WordNet synonyms)."""
    if not hypothesis or not reference:
        return 0.0
    _require_nltk()
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([reference], hypothesis, wordnet=_NoSynonyms()))


def _ngram_counts(words: list[str], n: int = 4) -> Counter:
    """Counts of every 1..n-gram of `words`, keyed by tuple."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(
    hypotheses: list[list[str]], references: list[list[str]], sigma: float = CIDER_SIGMA
) -> float:
    """pycocoevalcap's CIDEr-D of tokenized pairs, one reference each, averaged over pairs."""
    n = 4
    ref_counts = [_ngram_counts(ref, n) for ref in references]
    document_frequency = Counter(ngram for counts in ref_counts for ngram in counts)
    log_corpus_size = math.log(len(references))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        for ngram, term_freq in counts.items():
            weight = term_freq * (log_corpus_size - math.log(max(1.0, document_frequency[ngram])))
            vec[len(ngram) - 1][ngram] = weight
            norm[len(ngram) - 1] += weight**2
        # pycocoevalcap measures a text's length in bigrams (its `if n == 1`); kept for parity
        length = sum(c for ngram, c in counts.items() if len(ngram) == 2)
        return vec, [math.sqrt(x) for x in norm], length

    scores = []
    for hypothesis, counts in zip(hypotheses, ref_counts):
        vec_hyp, norm_hyp, length_hyp = vector(_ngram_counts(hypothesis, n))
        vec_ref, norm_ref, length_ref = vector(counts)
        penalty = math.exp(-((length_hyp - length_ref) ** 2) / (2 * sigma**2))
        per_order = []
        for k in range(n):
            # clipping: a hypothesis n-gram counts no more than the reference weights it
            value = sum(min(w, vec_ref[k].get(g, 0.0)) * vec_ref[k].get(g, 0.0)
                        for g, w in vec_hyp[k].items())
            if norm_hyp[k] and norm_ref[k]:
                value /= norm_hyp[k] * norm_ref[k]
            per_order.append(value * penalty)
        scores.append(10.0 * sum(per_order) / n)
    return sum(scores) / len(scores)


def nlg_scores(hypotheses: list[str], references: list[str], lang: str, mode: str = "word") -> dict:
    """BLEU-1..4, ROUGE-L, METEOR and CIDEr-D of hypotheses against their references.

    One reference per hypothesis, in the same order; `lang` and `mode` choose the tokens (see
    `tokens`). Returns the scores rounded to 4 digits and "n", the number of pairs.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; pair them one to one"
        )
    if not hypotheses:
        raise ValueError("nlg_scores needs at least one hypothesis/reference pair")
    hyp_tokens = [tokens(text, lang, mode) for text in hypotheses]
    ref_tokens = [tokens(text, lang, mode) for text in references]
    scores = {f"bleu_{n}": _bleu(hyp_tokens, ref_tokens, n) for n in range(1, 5)}
    pairs = list(zip(hyp_tokens, ref_tokens))
    scores["rouge_l"] = sum(rouge_l(h, r) for h, r in pairs) / len(pairs)
    scores["meteor"] = sum(meteor(h, r) for h, r in pairs) / len(pairs)
    scores["cider_d"] = cider_d(hyp_tokens, ref_tokens)
    return {**{name: round(value, 4) for name, value in scores.items()}, "n": len(pairs)}
