"""The `vlm` generator: a transformers vision-language model sees the query image and the
retrieved cases and writes the cited report.

Any checkpoint `AutoProcessor` + `AutoModelForImageTextToText` can load works: Qwen2-VL /
Qwen2.5-VL style chat templates, and LLaVA style (a processor without a chat template gets the
plain "USER: <image> ... ASSISTANT:" prompt). The prompt is the one the text LLM gets
(generator/prompts.py); the answer is read back by `read_report`, so its `[n]` become record ids.
No model is packaged: pass a local folder (`--vlm-path DIR`) or set CASELENS_VLM. Nothing is
downloaded unless CASELENS_ALLOW_DOWNLOAD=1 (`allow_download`; both read by rag.settings).

The model runs in a worker process (generator/worker.py) unless `isolate=False` or it was
loaded here (`_load()`), so a native crash or an OOM kill ends that request with
GeneratorCrashed, not the caller.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.base import Generator, GeneratorOptions, ModelUnusable, register_generator
from generator.evidence import number_cases, read_report
from generator.prompts import render_prompt
from generator.worker import ModelWorker
from rag.settings import VARIABLES
from rag.types import Hit, Query, Report

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 448  # px: bounds the image tokens (Qwen2-VL: (448 / 28)^2 = 256 at most)
ENV_MODEL, ENV_DOWNLOAD = VARIABLES["vlm_model"], VARIABLES["allow_download"]  # named in errors


@dataclass
class Answer:
    """What the model wrote, and whether a bound cut it: "tokens", "time" or None."""
    text: str
    tokens: int
    seconds: float
    cut: str | None = None


@register_generator("vlm")
class VisionLanguageGenerator(Generator):
    name = "vlm"

    @classmethod
    def keywords(cls, options: GeneratorOptions) -> dict:
        return {"model": options.vlm_path or options.env.vlm_model,
                "max_new_tokens": options.max_tokens, "max_seconds": options.max_seconds,
                "allow_download": options.env.allow_download}

    def __init__(self, model: str | None = None, max_new_tokens: int = 256,
                 max_seconds: float = 120.0, cases: int = 4, device: str | None = None,
                 support: Any = None, isolate: bool = True, allow_download: bool = False):
        """`allow_download`: fetch a hub id that is not cached (CASELENS_ALLOW_DOWNLOAD=1)."""
        super().__init__(support)
        if not model:
            raise ModelUnusable(
                "no vision-language model is packaged with caselens: pass --vlm-path DIR (a local "
                "folder of a Qwen2-VL / LLaVA model, e.g. a downloaded Qwen2-VL-2B-Instruct) or "
                f"set {ENV_MODEL}")
        self.model = str(model)
        self.max_new_tokens = max_new_tokens
        self.max_seconds = max_seconds
        self.cases = cases
        self.device = device
        self.isolate = isolate
        self.allow_download = allow_download
        self._model: Any = None
        self._processor: Any = None
        self._worker: ModelWorker | None = None

    @property
    def model_name(self) -> str:
        path = Path(self.model).expanduser()
        return path.name if path.exists() else self.model

    def _generate(self, hits: list[Hit], query: Query, lang: str) -> Report:
        cases = number_cases(hits, lang, limit=self.cases)
        if cases and self.isolate and self._model is None:  # the draft in the worker
            if self._worker is None:
                options = dict(model=self.model, max_new_tokens=self.max_new_tokens,
                               max_seconds=self.max_seconds, cases=self.cases, device=self.device,
                               isolate=False, allow_download=self.allow_download)
                self._worker = ModelWorker("generator.vlm:VisionLanguageGenerator", options,
                                           warm="_load")
            return self._worker.call("_generate", hits, query, lang,
                                     timeout=3 * self.max_seconds + 300)
        model = f"vlm:{self.model_name}"
        if not cases:
            # nothing to cite: a report from the image alone is what retrieval is here to prevent
            report = Report(lang=lang, model=model)
            report.warnings.append("no retrieved report to ground a report on; nothing was written")
            return report
        image = query_image(query.image)
        system, user = render_prompt(lang, cases, question=query.text, has_image=image is not None)
        answer = self._answer(system, user, image)
        report = read_report(answer.text, cases, lang, model=model)
        if answer.cut:
            bound = (f"max_new_tokens={self.max_new_tokens}" if answer.cut == "tokens"
                     else f"max_seconds={self.max_seconds:g}")
            report.warnings.append(f"the answer was cut at {answer.tokens} tokens / "
                                   f"{answer.seconds:.1f} s ({bound}); it may be incomplete")
        return report

    def _answer(self, system: str, user: str, image: Any) -> Answer:
        """The model's reply to the prompt (greedy, within the token and time bounds)."""
        import torch
        from transformers import MaxTimeCriteria, StoppingCriteriaList

        self._load()
        prompt = self._prompt(system, user, image is not None)
        inputs = self._processor(text=[prompt], images=[image] if image is not None else None,
                                 return_tensors="pt")
        inputs = inputs.to(self._model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        config = self._model.generation_config
        started = time.perf_counter()
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1,
                stopping_criteria=StoppingCriteriaList([MaxTimeCriteria(self.max_seconds)]),
                pad_token_id=config.pad_token_id if config.pad_token_id is not None
                else _first(config.eos_token_id))
        seconds = time.perf_counter() - started
        new = output[0, prompt_length:]  # (T,) only what the model wrote
        tokenizer = getattr(self._processor, "tokenizer", self._processor)
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        return Answer(text, len(new), seconds, _cut(new.tolist(), config.eos_token_id,
                                                    self.max_new_tokens, seconds, self.max_seconds))

    def _prompt(self, system: str, user: str, has_image: bool) -> str:
        """The chat-templated prompt; LLaVA-style plain text when the processor has no template."""
        processor = self._processor
        if not getattr(processor, "chat_template", None):
            log.info("%s has no chat template: using the plain 'USER: <image> ... ASSISTANT:' prompt",
                     self.model_name)
            token = getattr(processor, "image_token", None) or "<image>"
            image = f"{token}\n" if has_image else ""
            return f"{system}\nUSER: {image}{user} ASSISTANT:"
        content = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": user})
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]},
                    {"role": "user", "content": content}]
        import jinja2

        try:
            return processor.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
        except (jinja2.TemplateError, ValueError) as err:  # e.g. "System role not supported"
            log.info("%s's chat template refused a system message (%s): merged into the user turn",
                     self.model_name, err)
            content[-1]["text"] = f"{system}\n\n{user}"
            return processor.apply_chat_template(messages[1:], add_generation_prompt=True,
                                                 tokenize=False)

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            import transformers
        except ImportError as err:
            raise ImportError("the vlm generator needs torch and transformers: "
                              "pip install torch transformers") from err
        source = self._source()
        local_only = not self.allow_download
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
        # transformers 5 names the image+text -> text models AutoModelForImageTextToText;
        # Vision2Seq is its older name, CausalLM covers models that register only there
        auto_classes = [getattr(transformers, name) for name in (
            "AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM")
            if hasattr(transformers, name)]
        try:
            processor = transformers.AutoProcessor.from_pretrained(
                source, local_files_only=local_only)
            model, last = None, None
            for auto_class in auto_classes:
                try:
                    model = auto_class.from_pretrained(source, dtype=dtype,
                                                       local_files_only=local_only)
                    break
                except ValueError as err:  # "Unrecognized configuration class" for this auto class
                    last = err
            if model is None:
                raise ModelUnusable(f"{source} is not a vision-language model transformers can load "
                                 f"as image+text -> text ({last})")
        except OSError as err:
            raise ModelUnusable(self._unreachable(source, local_only)) from err
        self._processor, self._model = processor, model.to(device).eval()
        log.info("loaded VLM %s on %s (%s)", self.model_name, device, str(dtype).removeprefix("torch."))

    def _source(self) -> str:
        """The local folder to load, or the hub id when the name is not a path."""
        path = Path(self.model).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise ModelUnusable(
                    f"{path} is not a model folder (no config.json): point --vlm-path at the "
                    "folder of a Qwen2-VL / LLaVA model saved with save_pretrained")
            return str(path)
        looks_like_path = (path.is_absolute() or self.model.startswith((".", "~"))
                           or self.model.count("/") != 1)
        if looks_like_path:
            raise ModelUnusable(
                f"VLM folder not found: {path}; point --vlm-path (or {ENV_MODEL}) at a local "
                "folder of a Qwen2-VL / LLaVA model")
        return self.model

    def _unreachable(self, source: str, local_only: bool) -> str:
        if Path(source).exists():
            return (f"cannot load the VLM in {source}: its weights or processor files are missing "
                    "or damaged; save the model and its processor there with save_pretrained")
        if local_only:
            return (f"VLM {source!r} is neither a local folder nor in the Hugging Face cache; "
                    f"download it once and pass --vlm-path DIR, or set {ENV_DOWNLOAD}=1 to fetch it")
        return f"cannot fetch VLM {source!r} from the hub; check the id and the network"

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        on_cuda = self._model is not None and self._model.device.type == "cuda"
        self._model = self._processor = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()


def query_image(image: Any):
    """The query's image as an RGB PIL image whose longest side is at most MAX_IMAGE_SIDE, or
    None for a text-only query."""
    if image is None or (isinstance(image, str) and not image.strip()):
        return None
    if isinstance(image, str | Path):
        from rag.images import load_image

        image = load_image(image)
    else:
        image = image.convert("RGB")
    if max(image.size) > MAX_IMAGE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    return image


def _first(ids: int | list[int] | None) -> int | None:
    return ids[0] if isinstance(ids, list | tuple) and ids else ids


def _cut(new: list[int], eos: int | list[int] | None, max_tokens: int, seconds: float,
         max_seconds: float) -> str | None:
    """Which bound stopped the answer: none when it ended on an end-of-sequence token."""
    stops = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
    if new and new[-1] in stops:
        return None
    if len(new) >= max_tokens:
        return "tokens"
    return "time" if seconds >= max_seconds else None
