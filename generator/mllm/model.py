"""The case-conditioned MLLM: the encoder's image feature map -> a projector -> the packaged
Qwen2.5 (loaded in transformers from its GGUF, dequantized) with LoRA adapters (peft).

A variant is data (generator/mllm/configs/<name>.json): which LLM, which image backbone,
which projector (`mlp`: every cell of the feature map becomes one LLM token; `pool`: the map
is average-pooled to a grid first), LoRA rank and targets, and prompt budgets. The trained
parts (projector + adapter) live in generator/mllm/weights/<name>/ with their manifest.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from generator.base import ModelNotFound
from generator.loops import LOOP, LoopStop, cut_loop, last_whole_sentence, loop_period
from rag.registry import named_config
from rag.types import InputError

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_VARIANT = "qwen0.5b-pool"
IMAGE_MARK = "<image>"  # where the projected image tokens go in the prompt text
IGNORE = -100  # label of a position the loss skips (prompt, image, padding)


def load_variant(name_or_path: str | Path = DEFAULT_VARIANT) -> dict[str, Any]:
    """A variant config by name (generator/mllm/configs/) or path to a .json."""
    variant, path = named_config(name_or_path, CONFIG_DIR, lambda known: InputError(
        f"MLLM variant {name_or_path!r} not found; give one of {known} or a path to a "
        "variant .json"))
    variant.setdefault("name", path.stem)
    return variant


class Projector(nn.Module):
    """Image feature map (N, C, h, w) -> LLM input embeddings (N, tokens, d)."""

    def __init__(self, kind: str, in_dim: int, out_dim: int, hidden: int, grid: int = 4):
        super().__init__()
        if kind not in ("mlp", "pool"):
            raise ValueError(f"projector must be 'mlp' or 'pool', not {kind!r}")
        self.kind = kind
        self.pool = nn.AdaptiveAvgPool2d(grid) if kind == "pool" else nn.Identity()
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_dim))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.pool(fmap).flatten(2).transpose(1, 2))


def load_llm(variant: dict[str, Any], dtype: torch.dtype = torch.float32):
    """(model, tokenizer) of the variant's LLM: a packaged GGUF by name, or `llm_path` (a GGUF
    file or a transformers model folder). GGUF weights are dequantized to `dtype` once and kept
    as a transformers folder beside the packaged models (reading the GGUF again takes ~45 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generator.gguf import packaged_gguf

    path = Path(variant["llm_path"]).expanduser() if variant.get("llm_path") else None
    if path is None:
        path = packaged_gguf(variant["llm"])
    if not path.exists():
        raise ModelNotFound(f"no LLM at {path}: give a GGUF file or a transformers folder")
    started = time.perf_counter()
    converted = _converted(path) if path.is_file() else path
    if converted is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(converted), local_files_only=True,
                                                     dtype=dtype)
    else:
        kwargs = {"gguf_file": path.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=dtype, **kwargs)
        _keep_converted(path, model, tokenizer)
    log.info("loaded %s in %.1f s", path.name, time.perf_counter() - started)
    return model.eval(), tokenizer


def _conversion_dir(gguf: Path) -> tuple[Path, str]:
    from generator.gguf import models_dir

    stat = gguf.stat()
    return (models_dir() / f"{gguf.stem}.transformers",
            f"{gguf.resolve()} {stat.st_size} {stat.st_mtime_ns}")


def _converted(gguf: Path) -> Path | None:
    folder, stamp = _conversion_dir(gguf)
    source = folder / "source.txt"
    return folder if source.is_file() and source.read_text(encoding="utf-8") == stamp else None


def _keep_converted(gguf: Path, model, tokenizer) -> None:
    """Save the dequantized model for the next load (skipped, with a warning, when the disk
    refuses: loading from the GGUF still works)."""
    import shutil

    from safetensors.torch import save_model

    folder, stamp = _conversion_dir(gguf)
    work = folder.with_name(folder.name + ".partial")
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        # transformers refuses save_pretrained on a model read from a GGUF; the weights are plain
        # float tensors by now, so config + safetensors (shared embeddings handled) is the model
        model.config.save_pretrained(str(work))
        save_model(model, str(work / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(work))
        (work / "source.txt").write_text(stamp, encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written must not stop a load
        log.warning("could not keep the converted %s (%s): the next load reads the GGUF again",
                    gguf.name, err)
        shutil.rmtree(work, ignore_errors=True)


def add_lora(model, variant: dict[str, Any], adapter: Path | None = None, trainable: bool = True):
    """The LLM wrapped with the variant's LoRA adapters (fresh, or loaded from `adapter`)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    spec = variant.get("lora") or {}
    config = LoraConfig(r=int(spec.get("r", 8)), lora_alpha=int(spec.get("alpha", 16)),
                        lora_dropout=float(spec.get("dropout", 0.05)),
                        target_modules=list(spec.get("targets", ["q_proj", "v_proj"])),
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class CaseMLLM(nn.Module):
    """Backbone (frozen) + projector (trained) + LLM (frozen, LoRA trained in stage 2b)."""

    def __init__(self, variant: dict[str, Any], llm, tokenizer, backbone):
        super().__init__()
        self.variant = variant
        self.llm = llm
        self.tokenizer = tokenizer
        self.backbone = backbone
        spec = variant.get("projector") or {}
        width = llm.get_input_embeddings().weight.shape[1]
        self.projector = Projector(spec.get("type", "pool"), backbone.dim, width,
                                   int(spec.get("hidden", 1024)), int(spec.get("grid", 4)))
        self.device = next(llm.parameters()).device
        self.projector.to(self.device)
        end = "<|im_end|>"
        vocab = tokenizer.get_vocab()
        self.end_id = vocab[end] if end in vocab else tokenizer.eos_token_id

    def feature_maps(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.backbone.spatial(images).cpu()

    def chat_text(self, user: str, system: str | None = None) -> str:
        """The prompt in the LLM's own chat template, ready for the answer."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def embed(self, prompt: str, fmap: torch.Tensor, answer: str | None = None,
              max_answer_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs_embeds (1, T, d), labels (1, T)) for one chat prompt holding IMAGE_MARK once,
        the image's feature map (C, h, w) and, when training, the answer (learned, then the end
        token)."""
        if prompt.count(IMAGE_MARK) != 1:
            raise ValueError(f"the prompt must hold {IMAGE_MARK} exactly once")
        before, after = prompt.split(IMAGE_MARK)
        answer_ids = []
        if answer is not None:
            answer_ids = self._ids(answer)[:max_answer_tokens] + [self.end_id]
        embeddings = self.llm.get_input_embeddings()
        head = torch.tensor(self._ids(before), dtype=torch.long, device=self.device)
        tail = torch.tensor(self._ids(after) + answer_ids, dtype=torch.long, device=self.device)
        image = self.projector(fmap.unsqueeze(0).to(self.device, torch.float32))[0]
        parts = [embeddings(head), image.to(embeddings.weight.dtype), embeddings(tail)]
        labels = torch.full((head.numel() + image.shape[0] + tail.numel(),), IGNORE,
                            device=self.device)
        if answer_ids:
            labels[-len(answer_ids):] = torch.tensor(answer_ids, device=self.device)
        return torch.cat(parts).unsqueeze(0), labels.unsqueeze(0)

    def loss(self, prompt: str, fmap: torch.Tensor, answer: str,
             max_answer_tokens: int | None = None) -> torch.Tensor:
        embeds, labels = self.embed(prompt, fmap, answer, max_answer_tokens)
        return self.llm(inputs_embeds=embeds, labels=labels).loss

    @torch.no_grad()
    def generate(self, prompt: str, fmap: torch.Tensor, prefill: str = "",
                 max_new_tokens: int = 256, max_seconds: float = 60.0) -> tuple[str, str | None]:
        """Greedy answer to the prompt (continuing `prefill`), and why it was cut (None when
        it finished on its own). A variant's `no_repeat_ngram` (off by default) forbids writing
        any phrase of that many tokens twice: tried at 6 against the 0.5B model's loops on
        MedPix, it only turned exact loops into paraphrased ones ("mass of mass") and lowered
        ROUGE-L and label F1, so the shipped variant does not set it. Nor `repetition_penalty`
        (off at 1.0): at 1.15 on the second-epoch weights it shortened MedPix reports and lowered
        ROUGE-L 0.138 -> 0.109 and label F1 0.282 -> 0.247 (25 test images). What is on:
        a loop guard (generator/loops.py) that stops at a repeating tail, keeps one copy of it
        and drops an unfinished sentence after the last whole one."""
        from transformers import MaxTimeCriteria, StoppingCriteriaList

        loops = LoopStop()
        embeds, _ = self.embed(prompt + prefill, fmap)
        started = time.perf_counter()
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device),
            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=self.end_id,
            no_repeat_ngram_size=int(self.variant.get("no_repeat_ngram", 0)),
            repetition_penalty=float(self.variant.get("repetition_penalty", 1.0)),
            pad_token_id=self.end_id,
            stopping_criteria=StoppingCriteriaList([MaxTimeCriteria(max_seconds), loops]))
        new = out[0].tolist()
        finished = bool(new) and new[-1] == self.end_id
        period = None if finished else loop_period(new)
        if period:
            new = cut_loop(new, period)
        text = self.tokenizer.decode([t for t in new if t != self.end_id], skip_special_tokens=True)
        cut = None
        if period:
            return prefill + last_whole_sentence(text), LOOP
        if not finished:
            cut = (f"{max_seconds:g} s" if time.perf_counter() - started >= max_seconds
                   else f"{max_new_tokens} tokens")
        return prefill + text, cut

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The projector's weights (the adapter is saved by peft beside them)."""
        return {k: v.detach().cpu() for k, v in self.projector.state_dict().items()}


def build_model(variant: dict, adapter: Path | None = None, trainable: bool = True,
                projector: Path | None = None):
    """The CaseMLLM of a variant, with the projector (and adapter) of a checkpoint if given."""
    from rag.encoders.backbones import IMAGE_BACKBONES

    from rag.encoders.base import pick_device

    device = pick_device()  # a GPU when present (float32 on both)
    llm, tokenizer = load_llm(variant)
    llm.requires_grad_(False).to(device)
    backbone = IMAGE_BACKBONES[variant["image_backbone"]](image_size=variant.get("image_size", 224))
    backbone.to(device)
    model = CaseMLLM(variant, llm, tokenizer, backbone)
    if projector is not None:
        state = torch.load(projector, map_location="cpu", weights_only=True)
        model.projector.load_state_dict({k: v.float() for k, v in state.items()})
    if adapter is not None:
        model.llm = add_lora(llm, variant, adapter, trainable=trainable)
    return model
