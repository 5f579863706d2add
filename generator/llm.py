"""The `llm` generator: a GGUF language model (llama-cpp-python) writes the report from the
numbered retrieved cases and cites them as [n].

Decoding is greedy and bounded twice: `max_tokens`, and `max_seconds` of wall time (the
stream is cut, and the report says so). The prompt lists the cases in the report language
where the study has a report in it; otherwise the glossary's translations of the terms the
cases use (generator/prompts.py), and the support check flags terms the cases never name.

The model runs in a worker process (generator/worker.py) unless `isolate=False`: a native
crash in llama.cpp kills the worker, and the caller gets `GeneratorCrashed`. On a CPU with AMX,
llama-cpp-python 0.3.36 segfaults in its first decode (upstream llama.cpp #20824) unless the
model loads without extra buffer types; `extra_bufts` (or CASELENS_LLM_EXTRA_BUFTS=0/1)
overrides that choice so both can be measured (bench/bench_generate.py --extra-bufts).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from generator.base import (Generator, GeneratorOptions, ModelNotFound, ModelUnusable,
                            register_generator)
from generator.composer import phrases
from generator.evidence import attribute, number_cases, parse_citations, read_report
from generator.gguf import DEFAULT_MODEL, packaged_gguf
from generator.loops import LOOP
from generator.prompts import render_prompt, render_translation
from generator.worker import ModelWorker, resolve
from rag.settings import VARIABLES
from rag.types import Hit, InputError, Query, Report, Sentence

log = logging.getLogger(__name__)
PREFILL = {"en": "Findings:\n", "zh": "影像表现：\n"}
_STOPS = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"]
ENV_EXTRA_BUFTS = VARIABLES["llm_extra_bufts"]  # named in errors
_ON, _OFF = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo's text (x86: "flags : fpu ... avx512f amx_tile")."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def wants_extra_bufts(cpuinfo: str, override: str | None = None) -> bool:
    """Whether llama.cpp may use its extra buffer types (weight repacking, the AMX kernels):
    not on a CPU with AMX (amx_tile / amx_int8 / amx_bf16), where 0.3.36 segfaults in its first
    decode; `override` ("1" / "0", from CASELENS_LLM_EXTRA_BUFTS) decides when given."""
    if override is not None and override.strip():
        choice = override.strip().lower()
        if choice not in _ON | _OFF:
            raise InputError(f"{ENV_EXTRA_BUFTS} must be 1 or 0, not {override!r}")
        return choice in _ON
    return not any(flag.startswith("amx") for flag in cpu_flags(cpuinfo))


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no AMX flag to find
        return ""


@contextmanager
def _model_params(use_extra_bufts: bool):
    """llama-cpp-python 0.3.36's `Llama()` takes no `use_extra_bufts`: it builds the model params
    from `llama_model_default_params()` inside its constructor, so that call is wrapped while
    the model loads."""
    import llama_cpp.llama_cpp as bindings

    default = bindings.llama_model_default_params

    def params():
        made = default()
        made.use_extra_bufts = use_extra_bufts
        return made

    bindings.llama_model_default_params = params
    try:
        yield
    finally:
        bindings.llama_model_default_params = default


def llama_cpp_model(model_path: str, n_ctx: int, n_threads: int, use_extra_bufts: bool):
    """The default model factory: llama_cpp.Llama, with or without extra buffer types."""
    from llama_cpp import Llama

    with _model_params(use_extra_bufts):
        llama = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, seed=0,
                      verbose=False)
    if llama.model_params.use_extra_bufts != use_extra_bufts:
        raise RuntimeError("llama-cpp-python ignored use_extra_bufts: pin llama-cpp-python==0.3.36")
    return llama


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
    @classmethod
    def keywords(cls, options: GeneratorOptions) -> dict:
        return {"model_path": options.llm_path, "model": options.llm_model, **options.limits(),
                "models_dir": options.env.models_dir,
                "extra_bufts_setting": options.env.llm_extra_bufts}

    def __init__(self, model_path: str | Path | None = None, model: str = DEFAULT_MODEL,
                 max_tokens: int = 320, max_seconds: float = 90.0, cases: int = 4,
                 n_ctx: int = 4096, threads: int | None = None, support=None,
                 isolate: bool = True, extra_bufts: bool | None = None,
                 llama_factory: str | None = None, models_dir: str | Path | None = None,
                 extra_bufts_setting: str | None = None, **_):
        """`isolate`: run the model in a worker process (False: in this one). `extra_bufts`:
        None decides from `extra_bufts_setting` (CASELENS_LLM_EXTRA_BUFTS: "1" / "0"), else
        from the CPU (off with AMX). `models_dir`: where packaged models are assembled
        (CASELENS_MODELS). `llama_factory`:
        `module:callable(model_path, n_ctx, n_threads, use_extra_bufts)` building the model
        (default llama_cpp.Llama; tests give fakes, including ones that crash on purpose)."""
        super().__init__(support)
        self.model_path = Path(model_path) if model_path else None
        self.model = model
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.cases = cases
        self.n_ctx = n_ctx
        self.threads = threads or max(1, min(8, os.cpu_count() or 1))
        self.isolate = isolate
        self.extra_bufts = extra_bufts
        self.extra_bufts_setting = extra_bufts_setting
        self.llama_factory = llama_factory
        self.models_dir = models_dir
        self._llama = None  # the model, when it runs in this process
        self._worker: ModelWorker | None = None
        self._worker_made = threading.Lock()  # concurrent first requests (serve) make one worker
        self.last_decode: dict | None = None  # the last answer's tokens and seconds, when here
        self.label = f"llm:{self.model_path.name if self.model_path else model}"

    def load(self):
        """Load the model: in the worker process (returns the worker), or here when
        `isolate=False` (returns the model)."""
        if not self.isolate or self._llama is not None:
            return self._load_here()
        with self._worker_made:
            if self._worker is None:
                options = dict(model_path=self._checked_path(), model=self.model,
                               n_ctx=self.n_ctx, threads=self.threads, isolate=False,
                               extra_bufts=self.extra_bufts,
                               extra_bufts_setting=self.extra_bufts_setting,
                               llama_factory=self.llama_factory)
                self._worker = ModelWorker("generator.llm:LlamaCppGenerator", options,
                                           warm="_load_here")
        self._worker.start()
        return self._worker

    def _checked_path(self) -> Path | None:
        """The GGUF file, checked here (installed, present, sha256) before a worker loads it."""
        if self.llama_factory:
            return self.model_path
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelUnusable("the llm generator needs llama-cpp-python: run "
                             "`bash setup.sh --install-only` (or pip install "
                             "'llama-cpp-python==0.3.36')")
        path = self.model_path or packaged_gguf(self.model, self.models_dir)
        if not path.is_file():
            raise ModelNotFound(f"no GGUF model at {path}: give --llm-path FILE.gguf")
        return path

    def _load_here(self):
        if self._llama is None:
            path = self._checked_path()
            extra = self.extra_bufts
            if extra is None:
                extra = wants_extra_bufts(_read_cpuinfo(), self.extra_bufts_setting)
            factory = resolve(self.llama_factory) if self.llama_factory else llama_cpp_model
            started = time.perf_counter()
            self._llama = factory(model_path=str(path) if path else None, n_ctx=self.n_ctx,
                                  n_threads=self.threads, use_extra_bufts=extra)
            log.info("loaded %s in %.1f s (extra buffer types %s)", path.name if path else
                     self.llama_factory, time.perf_counter() - started, "on" if extra else "off")
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
        to the asked language and layout far better than instructions alone.

        Runs in the worker process unless the model is loaded here; raises GeneratorCrashed
        when the worker dies (the next call starts a new one)."""
        if self.isolate and self._llama is None:
            worker = self.load()
            # the worker's own bound is max_seconds of streaming; the prompt and a slow first
            # token get the rest, and a worker silent past all of it is treated as dead
            return worker.call("_complete_here", system, user, prefill, self.max_tokens,
                               self.max_seconds, timeout=3 * self.max_seconds + 120)
        return self._complete_here(system, user, prefill, self.max_tokens, self.max_seconds)

    def _complete_here(self, system: str, user: str, prefill: str, max_tokens: int,
                       max_seconds: float) -> tuple[str, str | None]:
        llama = self._load_here()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
        if template:
            prompt = _chat_prompt(template, messages) + prefill
            stream = llama.create_completion(prompt, temperature=0.0, max_tokens=max_tokens,
                                             stream=True, seed=0, stop=_STOPS)
        else:  # no template in the file: llama-cpp's own chat formatting, no prefill
            prefill = ""
            stream = llama.create_chat_completion(messages, temperature=0.0, stream=True, seed=0,
                                                  max_tokens=max_tokens)
        started = time.perf_counter()
        deadline = started + max_seconds
        pieces, cut, tokens, first = [prefill], None, 0, None
        for chunk in stream:
            choice = chunk["choices"][0]
            piece = choice.get("text") or choice.get("delta", {}).get("content") or ""
            if piece:  # llama-cpp streams one chunk per generated token
                tokens += 1
                first = first or time.perf_counter()
            pieces.append(piece)
            if choice.get("finish_reason") == "length":
                cut = f"{max_tokens} tokens"
            if choice.get("finish_reason") is None and time.perf_counter() > deadline:
                cut = f"{max_seconds:g} s"
                stream.close()
                break
        ended = time.perf_counter()
        self.last_decode = {"tokens": tokens, "prompt_seconds": (first or ended) - started,
                            "decode_seconds": ended - (first or ended)}
        return "".join(pieces), cut

    def decode_stats(self) -> dict | None:
        """The last answer's generated tokens, seconds to its first token (the prompt) and
        seconds after it (what tokens/s is measured on), wherever the model runs."""
        if self.isolate and self._llama is None:
            alive = self._worker is not None and self._worker.alive  # never start one for this
            return self._worker.call("decode_stats") if alive else None
        return self.last_decode

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None
