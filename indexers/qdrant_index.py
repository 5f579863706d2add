"""Qdrant backend: the embedded Rust engine (qdrant-edge) by default, or a Qdrant server by URL.

One backend name, "qdrant", three engines behind it:

- **edge** (the default when no URL is set): one qdrant-edge shard per kind under
  `<path>/qdrant/<kind>/`, DOT distance. Kinds under `exact_below` points are searched
  exactly; larger ones get an HNSW graph at save(), searched with the smallest hnsw_ef that
  reaches `target_recall`. See indexers/qdrant_edge.py.
- **server** (the `url` and `api_key` options; rag.pipeline fills them from
  CASELENS_QDRANT_URL / CASELENS_QDRANT_API_KEY, see rag.settings): collections
  `<prefix>_<kind>`, where the prefix is chosen when the index folder is created and kept in
  `<path>/qdrant-server.json` (with the URL, never the key), so two indexes never share
  collections and a reopened one finds its own. Collections are created with the scale
  settings of `collection_settings()` and keyword payload indexes on PAYLOAD_FIELDS. The
  server builds its HNSW graphs itself; `hnsw_ef` sets the per-query ef.
- **client** (`engine="client"`, a folder written by it, or qdrant-edge-py missing):
  qdrant-client's local mode under `<path>/qdrant`, an exact scan in Python persisted to
  SQLite: fine for tests and up to ~20k vectors per kind, ~1 s per filtered query at 20k.

Options (`open_index("qdrant", path, dim, **options)`) are the fields of QdrantOptions. Give
the API key through CASELENS_QDRANT_API_KEY rather than the `api_key` option where options are
recorded (the index builder writes them to its manifest); describe() never includes it.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from indexers import qdrant_edge
from indexers.base import VectorIndex, VectorIndexError, register_backend
from indexers.checks import (check_add, check_allowed, check_kind, check_queries, known_options,
                             padding)
from rag.settings import VARIABLES

# open_index imports every backend, so a missing qdrant-client must not break FAISS.
try:
    from qdrant_client import QdrantClient, models
except ImportError:  # pragma: no cover - exercised only where qdrant-client is absent
    QdrantClient = models = None

log = logging.getLogger(__name__)

URL_VARIABLE = VARIABLES["qdrant_url"]  # named in errors; rag.pipeline reads it
SERVER_FILE = "qdrant-server.json"
PAYLOAD_FIELDS = ("domain", "kind", "modality", "lang")  # keyword-indexed on a server
ENGINES = ("edge", "client")
QUANTIZATIONS = ("scalar",)
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,100}")
UPSERT_BATCH = 512
LOCAL_MODE_POINTS = 20_000  # where qdrant-client's local mode starts warning
LOCAL_MODE_ADVICE = "Local mode is not recommended"  # start of that warning's text
LOCAL_PREFIX = "caselens"  # local mode's collections are caselens_<kind>, as they always were


@dataclass(frozen=True)
class QdrantOptions:
    """The Qdrant backend's options (JSON values, kept in the manifest by the builder).

    engine: "edge" or "client"; None picks a server when a URL is set, else edge (client for
      a folder qdrant-client wrote, or when qdrant-edge-py is not installed).
    url, api_key: the server (rag.pipeline's default: CASELENS_QDRANT_URL / _API_KEY).
    hnsw_m, ef_construction: HNSW build settings (edge and server).
    target_recall, exact_below, exact_filter_below, full_scan_threshold_kb: edge only (see
      qdrant_edge.py).
    hnsw_ef: edge: used instead of tuning; server: ef per query (None: the server's default).
    collection_prefix, on_disk (None: True), quantization ("scalar": int8 kept in RAM),
      shard_number, replication_factor: server only, used when the collections are created.
    """

    engine: str | None = None
    url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed with the options
    hnsw_m: int = 32
    ef_construction: int = 100
    target_recall: float = 0.95
    exact_below: int = 20_000
    hnsw_ef: int | None = None
    exact_filter_below: int = 20_000
    full_scan_threshold_kb: int = 10_000
    collection_prefix: str | None = None
    on_disk: bool | None = None
    quantization: str | None = None
    shard_number: int | None = None
    replication_factor: int | None = None

    @classmethod
    def parse(cls, options: dict) -> QdrantOptions:
        opts = known_options(cls, options, "Qdrant")
        if opts.engine is not None and opts.engine not in ENGINES:
            raise VectorIndexError(f"engine {opts.engine!r} is not one of {ENGINES}")
        if opts.quantization is not None and opts.quantization not in QUANTIZATIONS:
            raise VectorIndexError(f"quantization {opts.quantization!r} is not one of "
                                   f"{QUANTIZATIONS} or None")
        number = isinstance(opts.target_recall, (int, float)) and not isinstance(
            opts.target_recall, bool)
        if not number or not 0 < opts.target_recall <= 1:
            raise VectorIndexError(f"target_recall must be in (0, 1], got {opts.target_recall!r}")
        for name, least, optional in (("hnsw_m", 2, False), ("ef_construction", 4, False),
                                      ("exact_below", 0, False), ("hnsw_ef", 1, True),
                                      ("exact_filter_below", 0, False),
                                      ("full_scan_threshold_kb", 0, False),
                                      ("shard_number", 1, True), ("replication_factor", 1, True)):
            value = getattr(opts, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise VectorIndexError(f"{name} must be an integer >= {least}, got {value!r}")
        if opts.on_disk is not None and not isinstance(opts.on_disk, bool):
            raise VectorIndexError(f"on_disk must be true, false or None, got {opts.on_disk!r}")
        prefix = opts.collection_prefix
        if prefix is not None and not (isinstance(prefix, str) and PREFIX_PATTERN.fullmatch(prefix)):
            raise VectorIndexError(f"collection_prefix {prefix!r} must be 1-100 letters, "
                                   "digits, _ or -")
        return opts


@register_backend("qdrant")
class QdrantIndex(VectorIndex):
    """Checks every input once (indexers/checks.py) and hands the work to one engine:
    EdgeEngine (indexers/qdrant_edge.py) or ClientEngine (a server, or qdrant-client's local
    mode). Scores are inner products (DOT distance; vectors are unit length)."""

    def __init__(self, path: Path, dim: int, **options):
        super().__init__(path, dim)
        self.options = QdrantOptions.parse(options)
        self.engine = _open_engine(self.path, dim, self.options)
        self.engine.tuning_queries = self.tuning_queries  # the engine that tunes reads them

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray,
            payloads: list[dict | None] | None = None) -> None:
        """VectorIndex.add, plus optional `payloads`: one JSON-like dict (or None) per id,
        stored with the point. A server keyword-indexes PAYLOAD_FIELDS for filtering there;
        caselens itself filters through the record store and `allowed`, so None is fine."""
        check_kind(kind)
        ids, vectors = check_add(ids, vectors, self.dim)
        payloads = _check_payloads(payloads, len(ids))
        if len(ids):
            self.engine.add(kind, ids, vectors, payloads)

    def remove(self, kind: str, ids: np.ndarray) -> None:
        check_kind(kind)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ids = ids[ids >= 0]  # no point has a negative id, and Qdrant ids are unsigned
        if len(ids) and self.engine.has(kind):
            self.engine.remove(kind, ids)

    def search(self, kind: str, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = check_queries(queries, self.dim, k)  # (Q, dim)
        allowed = check_allowed(allowed)
        scores, ids = padding(len(queries), k)  # (Q, k) each
        if allowed is not None:
            allowed = np.unique(allowed[allowed >= 0])
        depth = k if allowed is None else min(k, len(allowed))
        if depth == 0 or not len(queries) or not _valid_kind(kind) or not self.engine.has(kind):
            return scores, ids
        for row, points in enumerate(self.engine.search(kind, queries, depth, allowed)):
            for col, point in enumerate(points[:depth]):
                scores[row, col] = point.score
                ids[row, col] = point.id
        return scores, ids

    def count(self, kind: str) -> int:
        if not _valid_kind(kind) or not self.engine.has(kind):
            return 0
        return self.engine.count(kind)

    def save(self) -> None:
        """Edge: flush, build HNSW graphs and tune hnsw_ef for changed kinds. Server and
        local mode: nothing, both persist every upsert as it happens."""
        self.engine.save()

    def close(self) -> None:
        self.engine.close()

    def describe(self) -> dict:
        return {"backend": self.name, **self.engine.describe()}

    @classmethod
    def needed_files(cls, described: dict) -> list[str]:
        """The embedded engine's parameters and one shard folder per kind; qdrant-client's
        local mode its folder; a server nothing on disk."""
        engine = described.get("engine", "")
        if engine == "qdrant-edge":
            return [f"qdrant/{qdrant_edge.PARAMS_FILE}",
                    *(f"qdrant/{kind}" for kind in described.get("kinds", {}))]
        return [] if engine == "qdrant server" else ["qdrant"]


def _open_engine(path: Path, dim: int, options: QdrantOptions):
    url = options.url
    folder = path / "qdrant"
    if url:
        if options.engine == "edge":
            raise VectorIndexError("engine='edge' is the embedded store and takes no server "
                                   f"URL; drop the url option or unset {URL_VARIABLE}")
        return ClientEngine.server(path, dim, options, url, options.api_key)
    client_store = (folder / "meta.json").exists()  # what qdrant-client's local mode writes
    edge_store = (folder / qdrant_edge.PARAMS_FILE).exists()
    engine = options.engine
    if engine is None:
        if client_store:
            log.info("%s holds a qdrant-client local-mode store; opening it with qdrant-client "
                     "(rebuild the index to move it to the embedded engine)", folder)
            engine = "client"
        elif qdrant_edge.edge is None:
            log.warning("qdrant-edge-py is not installed, so the Qdrant index at %s uses "
                        "qdrant-client's local mode: an exact scan in Python, slow above ~20k "
                        "vectors; pip install qdrant-edge-py==0.9.0", folder)
            engine = "client"
        else:
            engine = "edge"
    if engine == "edge" and client_store:
        raise VectorIndexError(f"{folder} was written by qdrant-client's local mode; open it "
                               "with engine='client' or rebuild the index")
    if engine == "client" and edge_store:
        raise VectorIndexError(f"{folder} holds qdrant-edge shards; open it without "
                               "engine='client' or rebuild the index")
    if engine == "edge":
        return qdrant_edge.EdgeEngine(folder, dim, options)
    return ClientEngine.local(folder, dim)


class ClientEngine:
    """qdrant-client: a Qdrant server, or its local mode (an exact Python scan over SQLite).

    Each add is written at once (local mode commits to SQLite, a server acknowledges with
    wait=True), so save() has nothing left to do. Local mode locks its folder until close().
    """

    def __init__(self, client, dim: int, prefix: str, settings: dict | None = None,
                 described: dict | None = None, hnsw_ef: int | None = None):
        self.client, self.dim, self.prefix = client, dim, prefix
        self.settings = settings  # create_collection kwargs on a server; None in local mode
        self.described = described or {}
        self.search_params = None if hnsw_ef is None else models.SearchParams(hnsw_ef=hnsw_ef)
        self.kinds: set[str] = set()  # kinds whose collection is known to exist
        self.advised: set[str] = set()  # kinds already warned about local-mode size
        try:
            start = f"{prefix}_"
            for collection in self.client.get_collections().collections:
                if collection.name.startswith(start):
                    self._check_dim(collection.name)
                    self.kinds.add(collection.name[len(start):])
        except BaseException:
            self.client.close()
            raise

    @classmethod
    def local(cls, folder: Path, dim: int) -> ClientEngine:
        _need_client()
        try:
            with _quiet_local_mode():  # reopening a large collection warns again
                client = QdrantClient(path=str(folder))
        except RuntimeError as err:  # qdrant-client's message for a folder locked by another client
            raise VectorIndexError(f"the Qdrant store {folder} is open in another process or "
                                   f"object; close it first ({err})") from err
        return cls(client, dim, LOCAL_PREFIX,
                   described={"engine": "qdrant-client local mode",
                              "search": "exact scan in Python"})

    @classmethod
    def server(cls, path: Path, dim: int, options: QdrantOptions, url: str,
               api_key: str | None) -> ClientEngine:
        _need_client()
        shown = public_url(url)
        try:
            # The client's version check runs in a background thread that only warns when the
            # server is down; get_collections() fails here instead, naming the URL.
            client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
            client.get_collections()
        except Exception as err:
            raise VectorIndexError(f"cannot reach the Qdrant server at {shown} ({err}); start "
                                   f"it, or unset {URL_VARIABLE} to use the embedded store") from err
        try:
            prefix = server_prefix(path, shown, options.collection_prefix)
        except BaseException:
            client.close()
            raise
        described = {"engine": "qdrant server", "url": shown, "collection_prefix": prefix,
                     "settings": server_settings(options)}
        return cls(client, dim, prefix, collection_settings(dim, options), described,
                   options.hnsw_ef)

    def _collection(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def _check_dim(self, name: str) -> None:
        params = self.client.get_collection(name).config.params.vectors
        size = params.size if isinstance(params, models.VectorParams) else None
        if size != self.dim:
            raise VectorIndexError(f"Qdrant collection {name} holds {size}-d vectors but this "
                                   f"index was opened for {self.dim}-d; use the encoder it was "
                                   "built with, or rebuild with `python cli.py index`")

    def has(self, kind: str) -> bool:
        # Cache only "exists": another writer (a server build) may create it later.
        if kind not in self.kinds and self.client.collection_exists(self._collection(kind)):
            self._check_dim(self._collection(kind))
            self.kinds.add(kind)
        return kind in self.kinds

    def _create(self, kind: str) -> None:
        name = self._collection(kind)
        if self.settings is None:
            self.client.create_collection(name, vectors_config=models.VectorParams(
                size=self.dim, distance=models.Distance.DOT))
        else:
            self.client.create_collection(name, **self.settings)
            for payload_field in PAYLOAD_FIELDS:
                self.client.create_payload_index(name, payload_field,
                                                  field_schema=models.PayloadSchemaType.KEYWORD,
                                                  wait=True)
        self.kinds.add(kind)

    def add(self, kind: str, ids: np.ndarray, vectors: np.ndarray,
            payloads: list[dict | None] | None) -> None:
        if not self.has(kind):
            self._create(kind)
        name = self._collection(kind)
        with _quiet_local_mode():
            for start in range(0, len(ids), UPSERT_BATCH):
                stop = start + UPSERT_BATCH
                batch = models.Batch(ids=ids[start:stop].tolist(),
                                     vectors=vectors[start:stop].tolist(),
                                     payloads=None if payloads is None else
                                     [payload or {} for payload in payloads[start:stop]])
                self.client.upsert(name, batch, wait=True)
        local = self.settings is None
        if local and kind not in self.advised and self.count(kind) > LOCAL_MODE_POINTS:
            self.advised.add(kind)
            log.warning("Qdrant local mode holds over %d %s vectors and scans them all in "
                        "Python on every query; for speed install qdrant-edge-py, use a server "
                        "(%s) or the FAISS backend", LOCAL_MODE_POINTS, kind, URL_VARIABLE)

    def remove(self, kind: str, ids: np.ndarray) -> None:
        for start in range(0, len(ids), UPSERT_BATCH):
            chunk = ids[start:start + UPSERT_BATCH].tolist()
            self.client.delete(self._collection(kind), models.PointIdsList(points=chunk),
                               wait=True)

    def search(self, kind: str, queries: np.ndarray, depth: int,
               allowed: np.ndarray | None) -> list[list]:
        query_filter = None
        if allowed is not None:
            query_filter = models.Filter(must=[models.HasIdCondition(has_id=allowed.tolist())])
        # One request for the whole batch: one round trip on a server.
        requests = [models.QueryRequest(query=q.tolist(), filter=query_filter, limit=depth,
                                        params=self.search_params, with_payload=False,
                                        with_vector=False) for q in queries]
        responses = self.client.query_batch_points(self._collection(kind), requests=requests)
        return [response.points for response in responses]

    def count(self, kind: str) -> int:
        return int(self.client.count(self._collection(kind), exact=True).count)

    def save(self) -> None:
        """Nothing to do: every upsert is already written (see the class docstring)."""

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict:
        collections = {kind: {"collection": self._collection(kind), "points": self.count(kind)}
                       for kind in sorted(self.kinds)}
        return {**self.described, "distance": "dot", "collections": collections}


def collection_settings(dim: int, options: QdrantOptions) -> dict:
    """create_collection keyword arguments for a server collection (payload indexes are made
    after it, on PAYLOAD_FIELDS)."""
    on_disk = True if options.on_disk is None else options.on_disk
    settings = {
        "vectors_config": models.VectorParams(size=dim, distance=models.Distance.DOT,
                                              on_disk=on_disk),
        "hnsw_config": models.HnswConfigDiff(m=options.hnsw_m,
                                             ef_construct=options.ef_construction),
    }
    if options.quantization == "scalar":
        # int8 copies in RAM for the graph walk; the float32 originals (on disk) rescore
        settings["quantization_config"] = models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True))
    if options.shard_number is not None:
        settings["shard_number"] = options.shard_number
    if options.replication_factor is not None:
        settings["replication_factor"] = options.replication_factor
    return settings


def server_settings(options: QdrantOptions) -> dict:
    """The collection settings as plain JSON, for describe()."""
    return {"on_disk": True if options.on_disk is None else options.on_disk,
            "quantization": options.quantization, "shard_number": options.shard_number,
            "replication_factor": options.replication_factor,
            "hnsw": {"m": options.hnsw_m, "ef_construct": options.ef_construction},
            "hnsw_ef": options.hnsw_ef, "payload_indexes": list(PAYLOAD_FIELDS)}


def server_prefix(path: Path, url: str, requested: str | None) -> str:
    """The index's collection prefix: the one recorded in `<path>/qdrant-server.json`, or
    (first open) `requested` or caselens_<folder name>_<6 random hex>, then recorded there
    with the URL. `url` must already be free of credentials (public_url)."""
    file = path / SERVER_FILE
    if file.exists():
        try:
            recorded = json.loads(file.read_text(encoding="utf-8"))
            prefix = recorded["collection_prefix"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise VectorIndexError(f"cannot read {file} ({err}); it names this index's "
                                   "collections on the Qdrant server") from err
        if requested is not None and requested != prefix:
            raise VectorIndexError(f"this index's collections on the Qdrant server are "
                                   f"{prefix}_<kind> (recorded in {file}), not {requested}_<kind>;"
                                   " drop the collection_prefix option or rebuild the index")
        if recorded.get("url") != url:
            log.warning("the Qdrant index at %s was built on %s; opening its collections %s_* "
                        "on %s", path, recorded.get("url"), prefix, url)
        return prefix
    prefix = requested or default_prefix(path)
    path.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"url": url, "collection_prefix": prefix}, indent=1),
                    encoding="utf-8")
    return prefix


def default_prefix(path: Path) -> str:
    # a build writes into ".<name>.building" before it becomes <name>: name it after <name>
    folder = path.name.removeprefix(".").removesuffix(".building")
    name = re.sub(r"[^a-z0-9]+", "_", folder.lower()).strip("_")[:40] or "index"
    return f"caselens_{name}_{secrets.token_hex(3)}"


def public_url(url: str) -> str:
    """The URL without user:password or query string: safe to log and to write down."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _need_client() -> None:
    if QdrantClient is None:
        raise VectorIndexError("this Qdrant engine needs qdrant-client: pip install qdrant-client")


def _check_payloads(payloads, count: int) -> list[dict | None] | None:
    if payloads is None:
        return None
    payloads = list(payloads)
    if len(payloads) != count:
        raise VectorIndexError(f"got {len(payloads)} payloads for {count} ids")
    for payload in payloads:
        if payload is not None and not isinstance(payload, dict):
            raise VectorIndexError(f"a payload must be a dict or None, got {type(payload).__name__}")
    return payloads


def _valid_kind(kind: str) -> bool:
    try:
        check_kind(kind)
    except VectorIndexError:
        return False
    return True


@contextmanager
def _quiet_local_mode():
    """Silence qdrant-client's "not recommended above 20k points" UserWarning, raised deep
    inside the client; add() logs the same advice once per kind instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=LOCAL_MODE_ADVICE, category=UserWarning)
        yield
