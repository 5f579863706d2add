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
import time
from pathlib import Path

from generator.base import Generator, register_generator
from generator.composer import phrases
from generator.evidence import number_cases, read_report
from generator.gguf import DEFAULT_MODEL, packaged_gguf
from generator.prompts import render_prompt
from rag.types import Hit, Query, Report

log = logging.getLogger(__name__)


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
        system, user = render_prompt(lang, cases, question=query.text, has_image=False)
        text, cut = self.complete(system, user)
        report = read_report(text, cases, lang, self.label)
        if cut:
            report.warnings.append(phrases(lang)["cut"].format(limit=cut))
        if not report.sentences():
            report.warnings.append(phrases(lang)["empty_answer"])
        return report

    def complete(self, system: str, user: str) -> tuple[str, str | None]:
        """The model's answer to one chat turn, and why it was cut (None when it finished)."""
        llama = self.load()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        deadline = time.perf_counter() + self.max_seconds
        pieces, cut = [], None
        stream = llama.create_chat_completion(messages, temperature=0.0, max_tokens=self.max_tokens,
                                              stream=True, seed=0)
        for chunk in stream:
            choice = chunk["choices"][0]
            pieces.append(choice.get("delta", {}).get("content") or "")
            if choice.get("finish_reason") == "length":
                cut = f"{self.max_tokens} tokens"
            if time.perf_counter() > deadline:
                cut = f"{self.max_seconds:g} s"
                stream.close()
                break
        return "".join(pieces), cut

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
