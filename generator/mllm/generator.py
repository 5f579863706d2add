"""The `mllm` generator: our fine-tuned MLLM (generator/mllm/model.py) sees the query image's
feature map and the retrieved cases, and writes the cited report.

The trained projector and LoRA adapter ship in generator/mllm/weights/<variant>/ with a
manifest naming the base model's sha256; the base model is the packaged GGUF (set up by
setup.sh), so `ask --generator mllm` works offline. `--mllm DIR` takes another training
run's output (`train mllm --out DIR`).

The model runs in a worker process (generator/worker.py) unless `isolate=False`, so a native
crash or an OOM kill in torch ends that request with GeneratorCrashed, not the caller.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from generator.base import (Generator, GeneratorOptions, ModelNotFound, ModelUnusable,
                            register_generator)
from generator.composer import phrases
from generator.evidence import number_cases, read_report
from generator.llm import finish_report
from generator.mllm.model import DEFAULT_VARIANT, IMAGE_MARK, WEIGHTS_DIR
from generator.prompts import clip_text, render_mllm
from generator.worker import ModelWorker
from rag.types import Hit, Query, Report

log = logging.getLogger(__name__)
HEADINGS = {"en": "Findings:\n", "zh": "影像表现：\n"}


def weights_dir(model: str | Path) -> Path:
    """The folder of trained weights: a shipped variant's, or a `train mllm --out` folder."""
    folder = Path(model) if Path(model).is_dir() else WEIGHTS_DIR / str(model)
    if not (folder / "manifest.json").is_file():
        shipped = ", ".join(sorted(p.name for p in WEIGHTS_DIR.glob("*/manifest.json")))
        raise ModelNotFound(
            f"no trained MLLM weights in {folder} (manifest.json missing): give --mllm with a "
            f"shipped variant ({shipped or 'none shipped'}) or a `train mllm --out` folder, or "
            f"train them: python cli.py train mllm ../shared/data/cov-ctr --variant {model}")
    return folder


@register_generator("mllm")
class MLLMGenerator(Generator):
    @classmethod
    def keywords(cls, options: GeneratorOptions) -> dict:
        return {"model": options.mllm, **options.limits(), "threads": options.env.threads}

    def __init__(self, model: str | Path | None = None, max_tokens: int = 256,
                 max_seconds: float = 90.0, threads: int | None = None, support=None,
                 isolate: bool = True, **_):
        """`threads`: torch threads of the model (CASELENS_THREADS; None: torch's choice)."""
        super().__init__(support)
        self.model = model or DEFAULT_VARIANT
        self.max_tokens = max_tokens
        self.max_seconds = max_seconds
        self.threads = threads
        self.isolate = isolate
        self._model = None
        self._worker: ModelWorker | None = None
        self.label = f"mllm:{Path(self.model).name}"

    def load(self):
        """The model, loaded here; with `isolate`, the worker process that holds it."""
        if self.isolate:
            if self._worker is None:
                options = dict(model=str(self.model), max_tokens=self.max_tokens,
                               max_seconds=self.max_seconds, threads=self.threads, isolate=False)
                self._worker = ModelWorker("generator.mllm.generator:MLLMGenerator", options,
                                           warm="load")
            self._worker.start()
            return self._worker
        if self._model is None:
            import torch

            from generator.gguf import model_specs
            from generator.mllm.model import build_model

            folder = weights_dir(self.model)
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            variant = manifest["variant"]  # the config it was trained with
            if self.threads:
                torch.set_num_threads(int(self.threads))
            adapter = folder / "adapter" if (folder / "adapter").is_dir() else None
            model = build_model(variant, adapter, trainable=False,
                                projector=folder / "projector.pt")
            expected = (manifest.get("base_model") or {}).get("sha256")
            pinned = model_specs().get(variant.get("llm", ""), {}).get("sha256")
            if expected and pinned and expected != pinned and not variant.get("llm_path"):
                raise ModelUnusable(f"the weights in {folder} were trained on a base model with "
                                 f"sha256 {expected[:16]}..., not the packaged {pinned[:16]}...: "
                                 "retrain them with `python cli.py train mllm`")
            model.eval()
            self.variant = variant
            self._model = model
        return self._model

    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        from generator.vlm import query_image

        if self.isolate:  # the whole draft in the worker: the image and cases go there
            return self.load().call("_generate", hits, query, lang,
                                    timeout=3 * self.max_seconds + 300)
        model = self.load()
        cases = number_cases(hits, lang, int(self.variant.get("cases", 2)))
        report = Report(lang=lang, model=self.label)
        if not cases:
            report.warnings.append(phrases(lang)["no_hits" if not hits else "no_reports"])
            return report
        image = query_image(query.image)
        if image is None:
            report.warnings.append(phrases(lang)["needs_image"])
            return report
        words = int(self.variant.get("case_words", 60))
        user = render_mllm(lang, [(c.number, clip_text(c.text(), c.record.lang, words))
                                  for c in cases], IMAGE_MARK, query.text)
        prompt, fmap = model.chat_text(user), model.feature_maps([image])[0]
        text, cut = model.generate(prompt, fmap, prefill=HEADINGS.get(lang, ""),
                                   max_new_tokens=self.max_tokens, max_seconds=self.max_seconds)
        return finish_report(read_report(text, cases, lang, self.label), cases, lang, cut)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        self._model = None
