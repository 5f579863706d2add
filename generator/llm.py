"""The `llm` generator: a GGUF language model (llama-cpp-python) writes the report from the
numbered retrieved cases and cites them as [n].

Decoding is greedy and bounded twice: `max_tokens`, and `max_seconds` of wall time (the
stream is cut, and the report says so). The prompt lists the cases in the report language
where the study has a report in it; otherwise the glossary's translations of the terms the
cases use (generator/prompts.py), and the support check flags terms the cases never name.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from generator.base import Generator, register_generator
from generator.composer import phrases
from generator.evidence import attribute, number_cases, parse_citations, read_report
from generator.gguf import DEFAULT_MODEL, packaged_gguf
from generator.loops import LOOP
from generator.prompts import render_prompt, render_translation
from rag.types import Hit, Query, Report, Sentence

log = logging.getLogger(__name__)
PREFILL = {"en": "Findings:\n", "zh": "影像表现：\n"}
_STOPS = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"]


def _chat_prompt(template: str, messages: list[dict]) -> str:
    """The model's own chat template (from its GGUF metadata) applied to the messages."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token="", eos_token="")


def finish_report(report: Report, cases, lang: str, cut: str | None) -> Report:
    """What every model-written draft gets: citations for uncited quotes, and warnings for
    those, for a cut answer and for an answer without a report sentence."""
    matched = attribute(report, cases)
    if matched:
        report.warnings.append(phrases(lang)["cited_by_matching"].format(count=matched))
    if cut == LOOP:
        report.warnings.append(phrases(lang)["loop"])
    elif cut:
        report.warnings.append(phrases(lang)["cut"].format(limit=cut))
    if not report.sentences():
        report.warnings.append(phrases(lang)["empty_answer"])
    return report


@register_generator("llm")
class LlamaCppGenerator(Generator):
    def __init__(self, model_path: str | Path | None = None, model: str = DEFAULT_MODEL,
                 max_tokens: int = 320, max_seconds: float = 90.0, cases: int = 4,
                 n_ctx: int = 4096, threads: int | None = None, support=None, **_):
        super().__init__(support)
        self.model_path = Path(model_path) if model_path else None
        self.model = model
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.cases = cases
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))
        self._llama = None
        self.label = f"llm:{self.model_path.name if self.model_path else model}"

    def load(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as err:
                raise ValueError("the llm generator needs llama-cpp-python: run "
                                 "`bash setup.sh --install-only` (or pip install "
                                 "'llama-cpp-python==0.3.36')") from err
            path = self.model_path or packaged_gguf(self.model)
            if not path.is_file():
                raise FileNotFoundError(f"no GGUF model at {path}: give --llm-path FILE.gguf")
            started = time.perf_counter()
            self._llama = Llama(model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads,
                                seed=0, verbose=False)
            log.info("loaded %s in %.1f s", path.name, time.perf_counter() - started)
        return self._llama

    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        cases = number_cases(hits, lang, self.cases)
        if not cases:
            report = Report(lang=lang, model=self.label)
            report.warnings.append(phrases(lang)["no_hits" if not hits else "no_reports"])
            return report
        native = any(case.record.lang == lang for case in cases)
        if lang != "en" and not native:
            report, cut = self._translated(cases, query, lang)
        else:
            system, user = render_prompt(lang, cases, question=query.text, has_image=False)
            text, cut = self.complete(system, user, prefill=PREFILL[lang])
            report = read_report(text, cases, lang, self.label)
        return finish_report(report, cases, lang, cut)

    def _translated(self, cases, query: Query, lang: str) -> tuple[Report, str | None]:
        """No case has a report in `lang`: write in English from the cases, then translate the
        draft's sentences, numbered, with the glossary's terms; each translation keeps the
        citations of its English sentence (a 1.5B model asked to write Chinese from English
        cases copies the English instead, and drops citations when it translates them)."""
        system, user = render_prompt("en", cases, question=query.text, has_image=False)
        english, cut = self.complete(system, user, prefill=PREFILL["en"])
        draft = read_report(english, cases, "en", self.label)
        attribute(draft, cases)
        sentences = draft.sentences()
        if not sentences:
            return Report(lang=lang, model=self.label, errors=draft.errors), cut
        lines = [f"{n}. {s.text}" for n, s in enumerate(sentences, start=1)]
        system, user = render_translation(lang, "\n".join(lines))
        text, cut_again = self.complete(system, user, prefill="1. ")
        found = dict(re.findall(r"(?m)^\s*(\d+)\s*[.、．]\s*(.+?)\s*$", text))
        report = Report(lang=lang, model=self.label, errors=draft.errors)
        n = 0
        for section, originals in draft.sections.items():
            report.sections[section] = []
            for sentence in originals:
                n += 1
                translated = parse_citations(found.get(str(n), ""))[0] or sentence.text
                report.sections[section].append(Sentence(translated, list(sentence.cites)))
        return report, cut or cut_again

    def complete(self, system: str, user: str, prefill: str = "") -> tuple[str, str | None]:
        """The model's answer to one chat turn, and why it was cut (None when it finished).
        `prefill` starts the answer (e.g. the first section heading): it holds a small model
        to the asked language and layout far better than instructions alone."""
        llama = self.load()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
        if template:
            prompt = _chat_prompt(template, messages) + prefill
            stream = llama.create_completion(prompt, temperature=0.0, max_tokens=self.max_tokens,
                                             stream=True, seed=0, stop=_STOPS)
        else:  # no template in the file: llama-cpp's own chat formatting, no prefill
            prefill = ""
            stream = llama.create_chat_completion(messages, temperature=0.0, stream=True, seed=0,
                                                  max_tokens=self.max_tokens)
        deadline = time.perf_counter() + self.max_seconds
        pieces, cut = [prefill], None
        for chunk in stream:
            choice = chunk["choices"][0]
            pieces.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
            if choice.get("finish_reason") == "length":
                cut = f"{self.max_tokens} tokens"
            if choice.get("finish_reason") is None and time.perf_counter() > deadline:
                cut = f"{self.max_seconds:g} s"
                stream.close()
                break
        return "".join(pieces), cut

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
