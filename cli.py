"""caselens command line: index a corpus, search across modalities, ask for a cited report.

A thin front: it validates options, calls one function of rag.pipeline (or the demo and
training helpers), and prints. `--json` prints one JSON document for scripts.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from rag.training.mllm import MLLMTrainConfig

HELP = """caselens: bilingual multimodal retrieval and cited draft reports for medical images,
offline.

Examples:

  python cli.py demo && python cli.py index corpora/demo

  python cli.py ask --image corpora/demo_query/RG1_UNCI.dcm --lang zh

  python cli.py search --text "left pleural effusion" --to reports --k auto --json

  python cli.py corpus inspect ../shared/data/cov-ctr

  python cli.py serve --index indexes/default

Exit codes: 0 done; 1 an error in what was given (path, file, index, option value), printed
as one sentence on stderr, or a bug in caselens, printed with its traceback; 2 a command-line
usage error. --json prints one JSON document on stdout; progress and errors go to stderr.
Environment variables (CASELENS_MODELS, CASELENS_TRANSLATIONS, ...): rag/settings.py."""
BUG = "this is a bug in caselens; please report it with the traceback above"


class _Commands(TyperGroup):
    def invoke(self, ctx):  # an error not the user's (`_run`) is a bug: traceback, BUG, exit 1
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise  # an exit chosen on purpose, or a usage error
        except Exception:  # noqa: BLE001 - the one place that reports a bug
            traceback.print_exc(file=sys.stderr)
            print(BUG, file=sys.stderr)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, help=HELP,
                  rich_markup_mode=None)
train_app = typer.Typer(no_args_is_help=True, help="Train caselens models.")
app.add_typer(train_app, name="train")
corpus_app = typer.Typer(no_args_is_help=True, help="Look at corpus folders.")
app.add_typer(corpus_app, name="corpus")
eval_app = typer.Typer(no_args_is_help=True, help="Measure how well caselens retrieves and reports.")
app.add_typer(eval_app, name="eval")
translations_app = typer.Typer(no_args_is_help=True,
                               help="The user-level translation memory every index's ask reads.")
app.add_typer(translations_app, name="translations")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

INDEX_OPT = typer.Option(Path("indexes/default"), "--index", help="Index folder.")
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document instead of text.")
WAIT_OPT = typer.Option(0.0, "--wait", min=0.0,
                        help="Seconds to wait while another build or delete holds the index "
                             "(default: say who holds it and stop).")
FOLLOW_OPT = typer.Option(False, "--follow-symlinks",
                          help="Read linked files that lie outside the corpus folder "
                               "(refused by default, and listed as problems).")


def fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def _run(call):
    """Run a library call; the user's errors become one sentence and exit code 1 (a model
    worker that crashed too: only it died, and its sentence says what to use instead)."""
    from rag.pipeline import USER_ERRORS

    try:
        return call()
    except USER_ERRORS as exc:
        fail(str(exc))


def _tracked(label: str, call):
    """`_run(call(progress))` under a progress bar on stderr; `progress(done, total)`."""
    with _progress(label) as bar:
        task = bar.add_task(label, total=None)
        return _run(lambda: call(
            lambda done, total: bar.update(task, completed=done, total=total)))


@app.callback()
def main(verbose: bool = typer.Option(False, "-v", "--verbose", help="Log progress details.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class _Rate(ProgressColumn):
    """Items per second, once known."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "", style="progress.data.speed")


def _progress(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), _Rate(),
                    TimeElapsedColumn(), console=err, transient=True)


@app.command()
def index(
    corpus: Path = typer.Argument(..., help="Corpus folder (format detected from its content)."),
    index_dir: Path = INDEX_OPT,
    encoder: str = typer.Option("default", help="Encoder config name or path to a config JSON."),
    backend: str = typer.Option("both", help="faiss, qdrant or both."),
    fmt: str | None = typer.Option(None, "--format", help="Force a corpus format."),
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="Encode everything again instead of updating the index."),
    follow_symlinks: bool = FOLLOW_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
):
    """Detect the corpus format, encode images and texts, build FAISS and Qdrant indexes.

    Files that cannot be read are skipped, counted and listed; the build never stops for one.
    Running it again on a grown or edited corpus updates the index: only new or changed
    records are encoded, and records gone from the folder are removed. An interrupted build
    leaves the old index in place; run the same command again to resume. One build or delete
    of an index runs at a time: a second one says which process holds it (or waits, --wait).

    Example: python cli.py index ../shared/data/cov-ctr --index indexes/covctr
    """
    from rag import pipeline

    backends = ("faiss", "qdrant") if backend == "both" else (backend,)
    summary = _tracked("records read", lambda progress: pipeline.index(
        corpus, index_dir, encoder, backends, fmt, rebuild=rebuild,
        follow_symlinks=follow_symlinks, wait=wait, progress=progress))
    if as_json:
        out.print_json(json.dumps(summary.to_dict(), ensure_ascii=False))
        return
    verb = "updated" if summary.incremental else "built"
    out.print(f"index [bold]{summary.index}[/] {verb} in {summary.seconds:.1f} s "
              f"({', '.join(summary.backends)}) from {', '.join(summary.formats)}")
    out.print("  " + ", ".join(f"{n} {name}" for name, n in summary.changes.items()))
    for kind, domains in summary.counts.items():
        out.print(f"  {kind}: {sum(domains.values())} "
                  f"({', '.join(f'{d} {n}' for d, n in sorted(domains.items()))})")
    if summary.problems:
        out.print(f"[yellow]{len(summary.problems)} file(s) skipped[/] "
                  f"(all listed in {summary.index / 'problems.jsonl'}):")
        for problem in summary.problems[:10]:
            out.print(f"  {problem.path}: {problem.reason}", markup=False, highlight=False)


def _query(image: Path | None, text: str | None, lang: str, k: str, to: list[str],
           filters: dict[str, str], diversity: float = 0.0):
    from rag import pipeline

    if not image and not text:
        fail("give an image (--image PATH) or a text (--text \"...\")")
    if image and not image.exists():
        fail(f"image not found: {image}")
    return _run(lambda: pipeline.make_query(  # checks the kinds, k and the languages
        str(image) if image else None, text, to, k, lang, filters, diversity))


def _session(index_dir: Path, encoder: str | None, backend: str | None, **options: Any):
    from rag import pipeline

    return _run(lambda: pipeline.open_session(index_dir, encoder, backend, **options))


GENERATOR_OPT = typer.Option("auto", "--generator", "-g",
                             help="Who writes the report: auto (grounded; when no case speaks "
                                  "--lang, its sentences translated by the translation memory, "
                                  "then the local LLM), grounded (extractive, no model; fast), "
                                  "llm (the packaged Qwen2.5 GGUF via llama-cpp, or --llm-path), "
                                  "vlm (a transformers vision-language model at --vlm-path), "
                                  "mllm (our fine-tuned image + cases -> Qwen2.5 model, --mllm).")
# the flags of every command that writes reports (--name: type, help), given to the command as
# one GeneratorOptions; each generator takes the ones it uses (generator.base)
GENERATOR_FLAGS: dict[str, tuple[Any, str]] = {
    "llm_path": (Path | None, "A GGUF file for --generator llm (default: the packaged "
                              "Qwen2.5-1.5B)."),
    "vlm_path": (str | None, "A local folder (or hub id, when cached) of a Qwen2-VL / LLaVA style "
                             "model for --generator vlm."),
    "llm_model": (str | None, "Packaged GGUF for --generator llm: qwen2.5-1.5b (default) or "
                              "qwen2.5-0.5b."),
    "mllm": (str | None, "For --generator mllm: a shipped variant (default qwen0.5b-pool) or a "
                         "`train mllm --out` folder."),
    "max_tokens": (int | None, "Bound on the tokens an llm / vlm writes."),
    "max_seconds": (float | None, "Bound on the seconds an llm / vlm may take for one report "
                                  "(prompt reading included; default 90 / 120)."),
}


def with_generator_flags(command):
    """The command gets the GENERATOR_FLAGS as options and receives them as `options`."""
    signature = inspect.signature(command, eval_str=True)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                               default=typer.Option(None, "--" + name.replace("_", "-"), help=text))
             for name, (kind, text) in GENERATOR_FLAGS.items()]
    kept = [param for param in signature.parameters.values() if param.name != "options"]

    @functools.wraps(command)
    def run(*args, **kwargs):
        flags = {name: kwargs.pop(name) for name in GENERATOR_FLAGS}
        return command(*args, options=generator_options(**flags), **kwargs)

    run.__signature__ = signature.replace(parameters=[
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept), *added])
    return run


CHECK_OPT = typer.Option(True, "--check/--no-check",
                         help="Check each sentence against the cases it cites (marks unsupported "
                              "ones; loads a small text embedder).")


def generator_options(llm_path: Path | None = None, **flags: Any):
    """The GENERATOR_FLAGS as GeneratorOptions, with the environment's settings."""
    from generator.base import GeneratorOptions

    if llm_path is not None and not llm_path.is_file():
        fail(f"--llm-path {llm_path} is not a file: give a .gguf model file")
    return _run(lambda: GeneratorOptions.from_env(llm_path=llm_path, **flags))


FILTER_OPT = typer.Option([], "--filter", help="Only records whose FIELD equals VALUE: any record "
                                               "field or meta.KEY, e.g. --filter meta.view=PA "
                                               "(repeatable).")
ROUTE_OPT = typer.Option(True, "--route/--no-route",
                         help="Search an image query's predicted domain only (a clear vote of its "
                              "nearest indexed images; a close vote widens it).")


def _filters(pairs: list[str], **named: str | None) -> dict[str, str]:
    from rag.pipeline import parse_filters

    return _run(lambda: parse_filters(pairs, **named))


@app.command()
def search(
    image: Path | None = typer.Option(None, help="Query image (PNG/JPEG/DICOM)."),
    text: str | None = typer.Option(None, help="Query text (English or Chinese)."),
    to: list[str] = typer.Option(["reports"], help="What to find: reports, images, guidelines, qa."),
    k: str = typer.Option("5", help="Number of hits per kind, or 'auto' (score-gap rule)."),
    modality: str | None = typer.Option(None, help="Only this modality (xray, ct, mr...)."),
    domain: str | None = typer.Option(None, help="Only this domain (chest-xray...)."),
    lang: str | None = typer.Option(None, help="Only records in this language (en, zh)."),
    filters: list[str] = FILTER_OPT,
    route: bool = ROUTE_OPT,
    diversity: float = typer.Option(0.0, min=0.0, max=0.99,
                                    help="Re-rank by maximal marginal relevance: 0 orders by "
                                         "score alone; 0.3 trades some score for hits whose "
                                         "texts differ from those above them."),
    index_dir: Path = INDEX_OPT,
    encoder: str | None = typer.Option(None, help="Encoder (default: the index's own)."),
    backend: str | None = typer.Option(None, help="faiss or qdrant (default: the first)."),
    as_json: bool = JSON_OPT,
):
    """Cross-modal search: an image or a text against reports, images, guidelines or QA pairs.

    Examples:

      python cli.py search --image x.png --to images --to reports --k 5

      python cli.py search --text "ground-glass opacity" --to reports --domain chest-ct --json
    """
    from rag import pipeline

    query = _query(image, text, "en", k, to, _filters(filters, modality=modality, domain=domain,
                                                      lang=lang), diversity)
    session = _session(index_dir, encoder, backend, route=route)
    try:
        hits = _run(lambda: pipeline.search(session, query))
        explain = session.explain
    finally:
        session.close()
    if as_json:
        out.print_json(json.dumps({"hits": [h.to_dict() for h in hits], "retrieval": explain},
                                  ensure_ascii=False))
        return
    if explain.get("route"):
        out.print(f"route: {explain['route']['text']}", markup=False, highlight=False)
    if not hits:
        out.print("no hits")
    for hit in hits:
        rec = hit.record
        what = rec.image if rec.kind == "image" else rec.text[:160].replace("\n", " ")
        shown = hit.cosine if hit.cosine is not None else hit.score  # cosine reads better than RRF
        out.print(f"{hit.rank:>2}. {shown:.3f} [{rec.kind}/{rec.domain or '-'}/{rec.lang or '-'}]"
                  f" {rec.id}  {what}", markup=False, highlight=False)


@app.command()
@with_generator_flags
def ask(
    image: Path | None = typer.Option(None, help="Image to report on (PNG/JPEG/DICOM)."),
    text: str | None = typer.Option(None, help="A question or clinical context."),
    lang: str = typer.Option("en", help="Report language: en or zh."),
    k: str = typer.Option("auto", help="Cases to use per kind, or 'auto'."),
    domain: str | None = typer.Option(None, help="Only cases of this domain (overrides routing)."),
    filters: list[str] = FILTER_OPT,
    route: bool = ROUTE_OPT,
    index_dir: Path = INDEX_OPT,
    encoder: str | None = typer.Option(None, help="Encoder (default: the index's own)."),
    backend: str | None = typer.Option(None, help="faiss or qdrant (default: the first)."),
    generator: str = GENERATOR_OPT,
    check: bool = CHECK_OPT,
    as_json: bool = JSON_OPT,
    options=None,
):
    """Retrieve similar cases and write a draft report citing them (English or Chinese).

    Each sentence cites the retrieved cases it rests on; --check (default) marks sentences the
    cited cases do not support. Example:
    python cli.py ask --image corpora/demo_query/RG1_UNCI.dcm --lang zh --generator llm --json
    """
    from rag import pipeline

    query = _query(image, text, lang, k, ["images", "reports"], _filters(filters, domain=domain))
    session = _session(index_dir, encoder, backend, route=route, generator=generator,
                       generator_options=options, check_support=check)
    try:
        answer = _run(lambda: pipeline.ask(session, query, lang))
    finally:
        session.close()
    if as_json:
        out.print_json(json.dumps(answer.to_dict(), ensure_ascii=False))
        return
    words = pipeline.section_titles(lang)
    for warning in answer.report.warnings:
        out.print(f"[yellow]! {escape(warning)}[/]", highlight=False)
    for section, sentences in answer.report.sections.items():
        out.print(f"[bold]{words[section]}[/]")
        for sentence in sentences:
            cites = escape(f"[{', '.join(sentence.cites)}]")
            flag = "[red]✗[/] " if sentence.supported is False else ""
            out.print(f"  {flag}{escape(sentence.text)} [dim]{cites}[/]", highlight=False)
            for issue in sentence.issues:
                out.print(f"      [red]{escape(issue)}[/]", highlight=False)
    for error in answer.report.errors:
        out.print(f"[red]error: {escape(error)}[/]", highlight=False)
    out.print("[bold]Cases[/]")
    for hit in answer.hits:
        out.print(f"  {hit.rank}. {hit.score:.3f} {hit.record.kind} {hit.record.id}",
                  markup=False, highlight=False)


@app.command()
def delete(
    ids: list[str] = typer.Argument(None, help="Record ids to remove."),
    source: str | None = typer.Option(None, help="Remove every record of this source."),
    filters: list[str] = FILTER_OPT,
    index_dir: Path = INDEX_OPT,
    wait: float = WAIT_OPT,
    as_json: bool = JSON_OPT,
):
    """Remove records from an index, by id or by field (all backends, atomically).

    Example: python cli.py delete --source covid-chestxray --index indexes/default
    """
    from rag import pipeline

    chosen = _filters(filters, source=source)
    gone = _run(lambda: pipeline.delete(index_dir, tuple(ids or ()), chosen, wait))
    if as_json:
        out.print_json(json.dumps({"removed": gone}))
        return
    out.print(f"{gone} record(s) removed from {index_dir}", markup=False)


@app.command()
@with_generator_flags
def serve(
    index_dir: Path = INDEX_OPT,
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the service "
                                               "to the network (then set an API key)."),
    port: int = typer.Option(8000, help="TCP port."),
    backend: str | None = typer.Option(None, help="faiss or qdrant (default: the index's first)."),
    api_key: str | None = typer.Option(None, help="Require this key in the X-API-Key header of "
                                                  "/v1 calls (default: CASELENS_API_KEY)."),
    max_upload_mb: float = typer.Option(20, help="Largest accepted upload."),
    max_waiting: int = typer.Option(16, min=0, help="Requests that may wait behind the one "
                                                    "being served; more get 503 + Retry-After."),
    max_text_chars: int = typer.Option(2000, min=1, help="Longest search text or question "
                                                         "(longer: 413)."),
    threads: int = typer.Option(1, min=1, help="Torch threads of the worker that encodes and "
                                               "searches (one query gains little from more)."),
    generator: str = GENERATOR_OPT,
    options=None,
):
    """Serve the HTTP API and the web page over an index.

    POST /v1/search, POST /v1/ask, GET /v1/records/{id}[/thumbnail], POST /v1/admin/reload,
    GET /healthz, /readyz; OpenAPI docs at /docs; the web page at /. A rebuilt index
    (`python cli.py index` on the same folder) is picked up before the next request.

    Example: python cli.py serve --index indexes/default  then open http://127.0.0.1:8000/
    """
    import uvicorn

    from generator.base import generator_keywords
    from rag.service.app import Settings, create_app

    api_key = api_key or options.env.api_key
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        err.print(f"[yellow]warning:[/] serving on {host} without an API key: anyone who can "
                  "reach this port can query the index (set --api-key or CASELENS_API_KEY)")
    settings = Settings(index=index_dir, backend=backend, api_key=api_key,
                        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                        max_waiting=max_waiting, max_text_chars=max_text_chars, threads=threads,
                        generator=generator,
                        generator_options=_run(lambda: generator_keywords(generator, options)))
    logging.getLogger("caselens.api").setLevel(logging.INFO)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@app.command()
def demo(dest: Path = typer.Option(Path("corpora/demo"), help="Where to build the corpus."),
         as_json: bool = JSON_OPT):
    """Build the demo corpus from registry packages (no download from elsewhere).

    3,955 Open-i chest X-ray reports (torchxrayvision) and real DICOM images (pydicom-data).

    Example: python cli.py demo && python cli.py index corpora/demo
    """
    from rag import pipeline

    summary = _run(lambda: pipeline.build_demo(dest))
    if as_json:
        out.print_json(json.dumps({"corpus": str(dest), **summary}))
        return
    out.print(f"demo corpus in [bold]{dest}[/]: {summary}")


@corpus_app.command("inspect")
def corpus_inspect(
    corpus: Path = typer.Argument(..., help="Corpus folder."),
    fmt: str | None = typer.Option(None, "--format", help="Force a corpus format."),
    follow_symlinks: bool = FOLLOW_OPT,
    as_json: bool = JSON_OPT,
):
    """Say what `index` would read from a folder, without building anything.

    Detected format(s), counts per kind, modality, domain and language, every unusable file
    with the reason, and the reading speed.

    Example: python cli.py corpus inspect ../shared/data/medpix-2.0 --json
    """
    from corpora.inspect import inspect_corpus

    report = _run(lambda: inspect_corpus(corpus, fmt, follow_symlinks))
    if as_json:
        out.print_json(json.dumps(report, ensure_ascii=False))
        return
    out.print(f"{report['root']}: {', '.join(report['formats'])}", markup=False)
    for kind, groups in report["by_kind"].items():
        out.print(f"  {kind}: {sum(groups.values())} ("
                  f"{', '.join(f'{g} {n}' for g, n in sorted(groups.items()))})", markup=False)
    for name in ("modality", "lang"):
        counts = sorted(report["counts"][name].items(), key=lambda item: -item[1])
        out.print(f"  by {name}: {', '.join(f'{key} {n}' for key, n in counts)}", markup=False)
    out.print(f"  {report['records']} records read in {report['seconds']} s "
              f"({report['records_per_s']} records/s, images checked, nothing encoded)", markup=False)
    out.print(f"  {len(report['problems'])} problem(s): files skipped, or noted and kept",
              markup=False)
    for problem in report["problems"]:
        out.print(f"    {problem['path']}: {problem['reason']}", markup=False, highlight=False)


@train_app.command("encoder")
def train_encoder(
    corpora: list[Path] = typer.Argument(..., help="Corpus folders with image-report pairs."),
    config: str = typer.Option("default", help="Encoder config whose heads are trained."),
    heads_out: Path = typer.Option(Path("rag/encoders/model_configs/heads/default.pt"), "--out",
                                   help="Where to write the heads (a .json manifest goes beside)."),
    run_dir: Path = typer.Option(Path("runs/encoder"), help="Feature cache and training log."),
    epochs: int = typer.Option(60, help="Training epochs over the cached features."),
    seed: int = typer.Option(0, help="Random seed (split is by group hash, not by seed)."),
    init: Path | None = typer.Option(None, help="Heads checkpoint (.pt) to fine-tune from."),
    bilingual_weight: float = typer.Option(
        3.0, min=0.0, help="Weight of the Chinese <-> English report loss (0 turns it off)."),
    resume: bool = typer.Option(True, "--resume/--restart",
                                help="Continue an interrupted run from RUN_DIR/checkpoint.pt."),
    unfreeze: int = typer.Option(
        0, min=0, help="Also train the image backbone's last N stages (EfficientNet-Lite0: 1 = "
        "its 1x1 conv head, 6 = the last 5 blocks + head), from maps cached before them; they "
        "are saved in the heads file. 0: backbone frozen."),
    train_fraction: float = typer.Option(
        1.0, min=0.01, max=1.0, help="Train on this share of the training "
        "patients / cases only (how much more data would help); validation and test stay whole."),
    as_json: bool = JSON_OPT,
):
    """Stage 1: train the projection heads contrastively on image-report pairs.

    Symmetric InfoNCE over the image-report pairs of the given corpora, plus the same loss
    between the Chinese and English versions of each report (COV-CTR, Open-i zh/en), split by
    patient / case; prints test Recall@K before and after, trains the domain probe used for
    routing, and writes RUN_DIR/train_log.jsonl and RUN_DIR/train_curves.png.

    Example: python cli.py train encoder ../shared/data/cov-ctr ../shared/data/medpix-2.0
    """
    from rag.training.encoder import TrainConfig, train_heads

    cfg = TrainConfig(epochs=epochs, seed=seed, init=str(init) if init else None,
                      bilingual_weight=bilingual_weight, resume=resume, unfreeze=unfreeze,
                      train_fraction=train_fraction)
    result = _tracked("features", lambda progress: train_heads(
        config, corpora, heads_out, run_dir, cfg, progress=progress))
    summary = {"heads": str(result.heads_path), "counts": result.counts,
               "test_untrained": result.test_untrained, "test_trained": result.test_trained,
               "zh_to_en_untrained": result.bilingual_untrained,
               "zh_to_en_trained": result.bilingual_trained,
               "domain_accuracy": result.domain_accuracy,
               "log": str(run_dir / "train_log.jsonl"), "plot": str(run_dir / "train_curves.png")}
    _show(summary, _fields(summary), None, as_json)


MLLM = MLLMTrainConfig()  # the library's defaults are the command's


@train_app.command("mllm")
def train_mllm(
    corpora: list[Path] = typer.Argument(..., help="Corpus folders with images and reports."),
    variant: str = typer.Option(MLLM.variant, help="MLLM variant: a config in "
                                "generator/mllm/configs/ or a path to a .json."),
    out_dir: Path | None = typer.Option(None, "--out", help="Where the projector, adapter and "
                                        "manifest go (default generator/mllm/weights/VARIANT)."),
    run_dir: Path = typer.Option(Path("runs/train-mllm"), help="Examples, checkpoint, log, plot."),
    per_corpus: int = typer.Option(MLLM.per_corpus, min=1, help="Training images per corpus "
                                   "(each gives an example per report language)."),
    steps_projector: int = typer.Option(MLLM.steps_projector, min=0,
                                        help="Stage 2a steps: projector only."),
    steps_lora: int = typer.Option(MLLM.steps_lora, min=0, help="Stage 2b steps: projector + LoRA."),
    accumulate: int = typer.Option(MLLM.accumulate, min=1, help="Examples per optimizer step."),
    shuffle_share: float = typer.Option(MLLM.shuffle_share, min=0.0, max=1.0,
                                        help="Share of examples given the cases of another "
                                             "random study."),
    max_minutes: float | None = typer.Option(MLLM.max_minutes,
                                             help="Stop (and ship) after this long."),
    seed: int = typer.Option(MLLM.seed,
                             help="Random seed (image sample, shuffles, initial weights)."),
    resume: bool = typer.Option(True, "--resume/--restart",
                                help="Continue an interrupted run from RUN_DIR/checkpoint."),
    encoder: str = typer.Option(MLLM.encoder, help="Encoder whose retrieval picks each example's "
                                "cases (the shipped weights' examples: lite0)."),
    init: Path | None = typer.Option(None, help="Fine-tune trained weights (a shipped variant's "
                                     "folder or a `train mllm --out` folder) on these corpora; "
                                     "with an adapter there, stage 2a is skipped. Use a new "
                                     "--run-dir: a run dir's examples are reused."),
    as_json: bool = JSON_OPT,
):
    """Stage 2: train the MLLM (image feature map -> projector -> Qwen2.5 + LoRA).

    Builds examples from each corpus's training split (the image, the retrieved reports of
    OTHER studies, the study's own report as the cited answer, English and Chinese where the
    corpus has both; a share with the cases of a random study), trains the projector (2a),
    then projector + LoRA (2b), with resumable checkpoints, RUN_DIR/VARIANT/train_log.jsonl
    and train_curves.png, and writes the small trained files with a manifest to --out.
    A GPU is used when present; on 2 CPU cores one step takes about 5 s.

    Example: python cli.py train mllm ../shared/data/cov-ctr ../shared/data/medpix-2.0
    """
    from rag.training.mllm import run_folders, train_mllm as run

    for corpus in corpora:
        if not corpus.exists():
            fail(f"corpus folder {corpus} does not exist")
    out_dir, work_dir = run_folders(variant, out_dir, run_dir)
    cfg = MLLMTrainConfig(variant=variant, per_corpus=per_corpus, shuffle_share=shuffle_share,
                          steps_projector=steps_projector, steps_lora=steps_lora,
                          accumulate=accumulate, max_minutes=max_minutes, seed=seed,
                          corpora=[str(c) for c in corpora], init=str(init) if init else None,
                          encoder=encoder)
    result = _tracked("steps", lambda progress: run(cfg, out_dir, work_dir, resume,
                                                    progress=progress))
    _show(result, _fields(result), None, as_json)


def _json_file(value: Path | None) -> Path | None:
    if value is not None and value.suffix == ".md":
        fail(f"--out names the JSON file (the .md goes beside it), not {value}")
    return value


EVAL_OUT_OPT = typer.Option(None, "--out", callback=_json_file,
                            help="Also write the JSON here and a .md beside it.")


@eval_app.command("retrieval")
def eval_retrieval(
    corpora: list[Path] = typer.Argument(..., help="Corpus folders with image-report pairs."),
    split: str = typer.Option("test", help="test, val or train (the training split by patient "
                                           "/ case), or all (an external test set)."),
    encoder: str = typer.Option("default", help="Encoder config name or path to a config JSON."),
    compare_untrained: bool = typer.Option(False, "--compare-untrained",
                                           help="Also score the same config with untrained heads."),
    out_file: Path | None = EVAL_OUT_OPT,
    as_json: bool = JSON_OPT,
):
    """Stage 1: image <-> report and zh <-> en retrieval of the encoder on held-out pairs.

    Recall@1/5/10, MRR and median rank, overall, per domain and per source, beside a random
    ranking; the domain probe's accuracy. Ties count against a query (a strict rank).

    Example: python cli.py eval retrieval ../shared/data/cov-ctr --split test --json
    """
    from rag.evaluation.retrieval import evaluate_retrieval, to_markdown

    result = _tracked("encoded", lambda progress: evaluate_retrieval(
        corpora, split, encoder, compare_untrained, progress=progress))
    _show(result, to_markdown(result), out_file, as_json)


def _fields(result: dict) -> str:
    return "\n".join(f"{key}: {value}" for key, value in result.items())


def _show(result: dict, table: str, out_file: Path | None, as_json: bool) -> None:
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
        out_file.with_suffix(".md").write_text(table, encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    out.print(table, markup=False, highlight=False)


@eval_app.command("report")
@with_generator_flags
def eval_report(
    corpus: Path = typer.Argument(..., help="A corpus folder with images and their reports."),
    split: str = typer.Option("test", help="test, val or train (by patient / case), or all "
                                           "(every pair of a corpus kept apart; needs --index)."),
    lang: str = typer.Option("en", help="Report language to draft and score: en or zh."),
    generators: list[str] = typer.Option(["grounded"], "--generator", "-g",
                                         help="Generator(s) to score (repeatable): grounded, llm, "
                                              "vlm, mllm."),
    index_dir: Path | None = typer.Option(None, "--index", help="Retrieve from this index instead "
                                                                "of one built on the training split."),
    limit: int | None = typer.Option(None, help="Only the first N images (a quick run)."),
    k: str = typer.Option("auto", help="Cases retrieved per kind, or 'auto'."),
    encoder: str = typer.Option("default", help="Encoder config for the training-split index."),
    work_dir: Path = typer.Option(Path("runs/eval-report"), "--work",
                                  help="Where the training-split index is built and kept."),
    out_file: Path | None = EVAL_OUT_OPT,
    shuffle_cases: bool = typer.Option(False, "--shuffle-cases", help="Give each image the "
                                       "retrieved cases of another study: does a generator copy "
                                       "wrong cases (high copy ROUGE-L) or follow the image?"),
    as_json: bool = JSON_OPT,
    options=None,
):
    """Draft a report for each image of a split and score it against the study's own report.

    BLEU-1..4, ROUGE-L, METEOR, CIDEr-D (Chinese on characters and jieba words), clinical
    label F1, the share of sentences the support check flags and citation errors, beside the
    top-1 retrieved report, the oracle (best retrieved report) and a random report. The index
    holds the training split only (built once under runs/eval-report/).

    Example: python cli.py eval report ../shared/data/cov-ctr --lang zh -g grounded -g llm --limit 20
    """
    from rag.evaluation.reports import evaluate_reports, to_markdown

    if lang not in ("en", "zh"):
        fail(f"--lang must be en or zh, not {lang!r}")
    if not corpus.exists():
        fail(f"corpus folder {corpus} does not exist")
    from generator.base import generator_keywords

    chosen = _run(lambda: {name: generator_keywords(name, options) for name in generators})
    result = _tracked("reports", lambda progress: evaluate_reports(
        corpus, split, lang, tuple(generators), index_dir, limit, int(k) if k.isdigit() else k,
        encoder, chosen, work_dir, progress=progress, shuffle_cases=shuffle_cases))
    _show(result, to_markdown(result), out_file, as_json)


@translations_app.command("add")
def translations_add(
    corpora: list[Path] = typer.Argument(..., exists=True, file_okay=False,
                                         help="Corpus folders with zh / en report pairs."),
    memory: Path | None = typer.Option(None, help="Memory file (default: CASELENS_TRANSLATIONS "
                                                  "or ~/.cache/caselens/translation_memory.sqlite)."),
    as_json: bool = JSON_OPT,
):
    """Align the Chinese and English reports of bilingual corpora (COV-CTR, Open-i zh/en) by
    sentence and add them to the translation memory `ask --lang zh` uses on any index.

    Example: python cli.py translations add ../shared/data/cov-ctr ../shared/data/openi-iu-xray
    """
    from rag import pipeline

    counts = _run(lambda: pipeline.add_translations(list(corpora), memory))
    if as_json:
        out.print_json(json.dumps(counts))
        return
    out.print(f"{counts['aligned']} sentence pair(s) aligned, {counts['added']} new; the memory "
              f"holds {counts['total']}", markup=False)


if __name__ == "__main__":
    app()
