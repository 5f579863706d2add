"""`train mllm`: stage 2a (projector only) then stage 2b (projector + LoRA) on examples built
from the corpora's training splits (rag.training.mllm_data).

One step is one example (batch of 1, gradients accumulated over `accumulate` steps): the
loss is the LLM's next-token loss on the answer only. Every `save_every` steps the
projector, the adapter, the optimizer and the log go to RUN_DIR/checkpoint/ (written beside
and swapped in, so a crash never leaves half a checkpoint); a rerun resumes from it. At the
end (or at `max_minutes`) the projector + adapter are written to OUT with a manifest.
"""
from __future__ import annotations

import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from generator.base import ModelNotFound
from rag.types import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass
class MLLMTrainConfig:
    """A training run's settings; its defaults are `train mllm`'s (the shipped weights were
    trained with them, `--steps-lora 640` apart). torch is imported only by the training
    functions, so the CLI reads these defaults without loading it."""

    variant: str = "qwen0.5b-pool"
    per_corpus: int = 150  # training images per corpus
    shuffle_share: float = 0.2
    steps_projector: int = 60  # stage 2a
    steps_lora: int = 360  # stage 2b
    lr_projector: float = 1e-3
    lr_lora: float = 5e-4
    accumulate: int = 2
    val_examples: int = 8
    val_every: int = 50
    save_every: int = 25
    max_minutes: float | None = None
    seed: int = 0
    encoder: str = "default"
    threads: int | None = None
    corpora: list[str] = field(default_factory=list)
    init: str | None = None  # trained weights (a `train mllm --out` folder) to start from


def run_folders(variant: str, out: Path | None, run_root: Path) -> tuple[Path, Path]:
    """Where a run of `variant` (a config name or .json path) ships its weights (default: the
    shipped variant's folder, generator/mllm/weights/NAME) and where it works (RUN_ROOT/NAME)."""
    from generator.mllm.model import WEIGHTS_DIR

    name = Path(variant).stem if variant.endswith(".json") else variant  # "qwen0.5b-pool"
    return out or WEIGHTS_DIR / name, run_root / name


def fit_answer(answer: str, budget: int, count: Callable[[str], int]) -> str:
    """The answer cut at whole lines to about `budget` tokens, impression lines kept first:
    a long case report (MedPix) keeps its diagnosis and as many findings as fit."""
    lines = answer.split("\n")
    if count(answer) <= budget:
        return answer
    from rag.training.mllm_data import HEADINGS

    second = {heads[1] for heads in HEADINGS.values()}
    cut = next((i for i, line in enumerate(lines) if line in second), len(lines))
    findings, impression = lines[:cut], lines[cut:]
    left = budget - count("\n".join(impression))
    kept = findings[:1]
    for line in findings[1:]:
        if count("\n".join(kept + [line])) > left:
            break
        kept.append(line)
    return "\n".join(kept + impression) if len(kept) > 1 else "\n".join(lines[:2] + impression)


def _examples(cfg: MLLMTrainConfig, run_dir: Path, progress) -> list:
    from rag.training.mllm_data import build_examples, load_examples, save_examples

    path = run_dir / "examples.jsonl"
    if path.exists():
        return load_examples(path)
    examples = []
    for corpus in cfg.corpora:
        examples += build_examples(corpus, cfg.per_corpus, shuffle_share=cfg.shuffle_share,
                                   encoder=cfg.encoder, seed=cfg.seed, progress=progress)
    save_examples(examples, path)
    return examples


def prompt_of(model, example) -> str:
    from generator.mllm.model import IMAGE_MARK
    from generator.prompts import render_mllm

    return model.chat_text(render_mllm(example.lang, example.cases, IMAGE_MARK))


class _Features:
    """Feature maps of the example images, computed once each."""

    def __init__(self, model):
        self.model, self.cache = model, {}

    def __call__(self, path: str) -> torch.Tensor:
        if path not in self.cache:
            from rag.images import load_image

            self.cache[path] = self.model.feature_maps([load_image(path)])[0]
        return self.cache[path]


def _save_checkpoint(model, optimizer, state: dict, run_dir: Path) -> None:
    import torch

    work, final = run_dir / "checkpoint.partial", run_dir / "checkpoint"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.save(model.trainable_state(), work / "projector.pt")
    if state["stage"] == "2b":
        model.llm.save_pretrained(str(work / "adapter"))
    torch.save(optimizer.state_dict(), work / "optimizer.pt")
    (work / "state.json").write_text(json.dumps(state), encoding="utf-8")
    old = run_dir / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _optimizer(model, stage: str, cfg: MLLMTrainConfig) -> torch.optim.Optimizer:
    import torch

    groups = [{"params": list(model.projector.parameters()), "lr": cfg.lr_projector}]
    if stage == "2b":
        lora = [p for n, p in model.llm.named_parameters() if p.requires_grad and "lora_" in n]
        groups = [{"params": list(model.projector.parameters()), "lr": cfg.lr_lora},
                  {"params": lora, "lr": cfg.lr_lora}]
    return torch.optim.AdamW(groups, weight_decay=0.0)


def train_mllm(cfg: MLLMTrainConfig, out: Path, run_dir: Path, resume: bool = True,
               progress: Callable[[int, int | None], None] | None = None,
               stage_progress: Callable[[str], None] | None = None) -> dict:
    """Train the variant's projector (2a) and LoRA (2b); write OUT and return the summary."""
    import torch

    from generator.mllm.model import add_lora, build_model, load_variant

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    variant = load_variant(cfg.variant)
    init = init_weights(cfg, variant) if cfg.init else None  # checked before any work
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for name in ("checkpoint", "examples.jsonl", "train_log.jsonl"):
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    examples = _examples(cfg, run_dir, progress)
    if len(examples) <= cfg.val_examples:
        raise InputError(f"only {len(examples)} training examples: give more corpora or "
                         "a larger --per-corpus")
    rng = random.Random(cfg.seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    val, train = order[:cfg.val_examples], order[cfg.val_examples:]
    checkpoint = run_dir / "checkpoint"
    state = {"step": 0, "stage": "2a", "seconds": 0.0}
    if resume and (checkpoint / "state.json").exists():
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    if state["step"]:
        weights = checkpoint
    elif init:  # fine-tune trained weights: with an adapter, straight into stage 2b
        weights = init
        state["stage"] = "2b" if (weights / "adapter").is_dir() else "2a"
    else:
        weights = None
    adapter = weights / "adapter" if weights and state["stage"] == "2b" else None
    model = build_model(variant, adapter, True, weights / "projector.pt" if weights else None)
    optimizer = _optimizer(model, state["stage"], cfg)
    if state["step"] and (checkpoint / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    features = _Features(model)
    budget = int(variant.get("answer_tokens", 160))

    def count(text: str) -> int:
        return len(model._ids(text))

    def example_loss(index: int) -> torch.Tensor:
        example = examples[index]
        return model.loss(prompt_of(model, example), features(example.image),
                          fit_answer(example.answer, budget, count), budget + 8)

    log_path = run_dir / "train_log.jsonl"
    total = cfg.steps_projector + cfg.steps_lora
    if init and (init / "adapter").is_dir():
        total = cfg.steps_lora  # the init's projector is trained: no stage 2a
    started = time.perf_counter() - state["seconds"]
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes else None
    stopped_early = False
    model.projector.train()
    while state["step"] < total:
        if state["stage"] == "2a" and state["step"] >= cfg.steps_projector:
            state["stage"] = "2b"  # stage 2b: LoRA joins the projector
            model.llm = add_lora(model.llm, variant)
            optimizer = _optimizer(model, "2b", cfg)
            if stage_progress:
                stage_progress("2b")
        model.llm.train(state["stage"] == "2b")
        index = train[state["step"] % len(train)]
        loss = example_loss(index)
        (loss / cfg.accumulate).backward()
        state["step"] += 1
        if state["step"] % cfg.accumulate == 0 or state["step"] == total:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        state["seconds"] = time.perf_counter() - started
        entry = {"step": state["step"], "stage": state["stage"], "loss": round(loss.item(), 4),
                 "shuffled": examples[index].shuffled, "seconds": round(state["seconds"], 1)}
        if state["step"] % cfg.val_every == 0 or state["step"] == total:
            entry["val_loss"] = round(_val_loss(model, val, example_loss), 4)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if progress:
            progress(state["step"], total)
        if state["step"] % cfg.save_every == 0:
            _save_checkpoint(model, optimizer, state, run_dir)
        if deadline and time.perf_counter() > deadline:
            stopped_early = state["step"] < total
            break
    _save_checkpoint(model, optimizer, state, run_dir)
    return _ship(model, variant, cfg, examples, state, out, run_dir, stopped_early)


def init_weights(cfg: MLLMTrainConfig, variant: dict) -> Path:
    """The `--init` folder, checked: trained for the same variant (projector and adapter
    shapes) on the same base model."""
    folder = Path(cfg.init)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file() or not (folder / "projector.pt").is_file():
        raise ModelNotFound(f"--init {folder}: no trained MLLM weights there (it needs "
                                "manifest.json and projector.pt, as `train mllm --out` writes)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    trained = manifest.get("variant", {})
    same = ("llm", "llm_path", "image_backbone", "image_size", "projector", "lora")
    differ = [key for key in same if trained.get(key) != variant.get(key)]
    if differ:
        raise InputError(f"--init {folder} was trained as variant {trained.get('name')!r}, "
                         f"which differs from {variant['name']!r} in {', '.join(differ)}: "
                         f"give --variant {trained.get('name')} or train from scratch")
    return folder


def _val_loss(model, val: Sequence[int], example_loss) -> float:
    import torch

    was = model.llm.training
    model.llm.eval()
    with torch.no_grad():
        losses = [example_loss(i).item() for i in val]
    model.llm.train(was)
    return sum(losses) / max(len(losses), 1)


def _ship(model, variant: dict, cfg: MLLMTrainConfig, examples: list, state: dict, out: Path,
          run_dir: Path, stopped_early: bool) -> dict:
    """Projector (float16) + adapter + manifest into OUT (replacing what was there), and the
    loss plot into RUN_DIR."""
    from collections import Counter

    import torch

    from generator.gguf import model_specs
    from rag.manifest import file_sha256
    from rag.training.plots import plot_curves

    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    smooth = [sum(r["loss"] for r in rows[i:i + 10]) / len(rows[i:i + 10])
              for i in range(0, len(rows), 10)]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    plot = plot_curves({"train loss (mean of 10 steps)": smooth, "validation loss": val},
                       run_dir / "train_curves.png", f"train mllm {variant['name']}",
                       x_label="point")
    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.save({k: v.half() for k, v in model.trainable_state().items()}, work / "projector.pt")
    if state["stage"] == "2b":
        model.llm.save_pretrained(str(work / "adapter"))
        _scrub_adapter_config(work / "adapter" / "adapter_config.json")
        (work / "adapter" / "README.md").unlink(missing_ok=True)  # peft's empty model card
    spec = model_specs().get(variant.get("llm", ""), {})
    counts = Counter(f"{e.corpus}:{e.lang}" + (":shuffled" if e.shuffled else "") for e in examples)
    manifest = {
        "variant": variant, "base_model": {"name": variant.get("llm"),
                                           "sha256": spec.get("sha256"),
                                           "file": spec.get("file")},
        "data": {"corpora": cfg.corpora, "examples": len(examples), "counts": dict(counts),
                 "examples_sha256": file_sha256(run_dir / "examples.jsonl"),
                 "split": "training split of each corpus (corpora.splits.split_of); own study "
                          "and patient group never among the cases"},
        "training": {"config": asdict(cfg), "steps": state["step"], "stage": state["stage"],
                     "seconds": round(state["seconds"], 1), "stopped_at_time_limit": stopped_early,
                     "final_train_loss": smooth[-1] if smooth else None,
                     "final_val_loss": val[-1] if val else None,
                     "first_val_loss": val[0] if val else None},
        "init": _lineage(cfg.init),
        "command": " ".join(["python cli.py", *sys.argv[1:]]) if sys.argv[0].endswith("cli.py")
        else None,
        "files": {},
        "eval": {},
    }
    for path in sorted(work.rglob("*")):
        if path.is_file():
            manifest["files"][str(path.relative_to(work))] = file_sha256(path)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return {"out": str(out), "steps": state["step"], "stage": state["stage"],
            "seconds": round(state["seconds"], 1), "examples": len(examples),
            "counts": dict(counts), "first_val_loss": manifest["training"]["first_val_loss"],
            "final_val_loss": manifest["training"]["final_val_loss"],
            "log": str(run_dir / "train_log.jsonl"), "plot": str(plot),
            "stopped_at_time_limit": stopped_early}


def _lineage(init: str | None) -> dict | None:
    """What `--init` weights were: their files' sha256 and how they were trained."""
    if not init:
        return None
    manifest = json.loads((Path(init) / "manifest.json").read_text(encoding="utf-8"))
    return {"from": str(init), "files": manifest.get("files"), "data": manifest.get("data"),
            "training": manifest.get("training"), "command": manifest.get("command"),
            "init": manifest.get("init")}


def _scrub_adapter_config(path: Path) -> None:
    """peft records the base model's local path; a shipped adapter names no machine's folder."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = None
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
