"""The record store: every Record of an index in SQLite, with an FTS5 index for lexical search.

Vector indexes hold only the integer row ids; this store maps them back to Records.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from rag.text.words import has_cjk, words
from rag.types import InputError, Record

_COLUMNS = ("id", "kind", "modality", "body_part", "domain", "lang", "text", "image", "study",
            "source", "license", "meta", "root")
FILTER_FIELDS = ("id", "kind", "modality", "body_part", "domain", "lang", "study", "source",
                 "license", "image")  # and "meta.<key>" for any key of a record's meta
_META_KEY = re.compile(r"^meta\.[A-Za-z_][A-Za-z0-9_]*$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    rowid INTEGER PRIMARY KEY,
    id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, modality TEXT, body_part TEXT, domain TEXT,
    lang TEXT, text TEXT, image TEXT, study TEXT, source TEXT, license TEXT, meta TEXT, root TEXT,
    digest TEXT
);
CREATE INDEX IF NOT EXISTS records_kind ON records(kind, domain, lang);
CREATE INDEX IF NOT EXISTS records_study ON records(study);
CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5(text, content='records',
    content_rowid='rowid', tokenize='trigram');
CREATE VIRTUAL TABLE IF NOT EXISTS records_words USING fts5(words, tokenize='unicode61');
"""


class RecordStore:
    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"record store not found: {self.path}")
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        if not readonly:
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, records: Sequence[Record], digests: Sequence[str] | None = None) -> list[int]:
        """Insert new records, with the digest a later build compares against; returns their
        row ids. Remove a record before adding it again (ids are unique)."""
        rows = []
        for rec, digest in zip(records, digests or [None] * len(records)):
            values = [getattr(rec, c) for c in _COLUMNS]
            values[_COLUMNS.index("meta")] = json.dumps(rec.meta, ensure_ascii=False)
            rows.append([*values, digest])
        cur = self.db.cursor()
        ids = []
        columns = ",".join([*_COLUMNS, "digest"])
        for values in rows:
            cur.execute(f"INSERT INTO records ({columns}) VALUES ({','.join('?' * len(values))})",
                        values)
            rowid = cur.lastrowid
            text = values[_COLUMNS.index("text")] or ""
            cur.execute("INSERT INTO records_fts(rowid, text) VALUES (?, ?)", (rowid, text))
            cur.execute("INSERT INTO records_words(rowid, words) VALUES (?, ?)",
                        (rowid, " ".join(words(text))))
            ids.append(rowid)
        self.db.commit()
        return ids

    def remove(self, ids: Sequence[str]) -> dict[str, list[int]]:
        """Delete records by id (unknown ids are ignored); returns {kind: [row ids]} removed,
        for the vector indexes to drop."""
        removed: dict[str, list[int]] = {}
        cur = self.db.cursor()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            rows = cur.execute(f"SELECT rowid, kind, text FROM records WHERE id IN "
                               f"({','.join('?' * len(chunk))})", chunk).fetchall()
            for rowid, kind, text in rows:
                # an external-content FTS table forgets a row only when told its old text
                cur.execute("INSERT INTO records_fts(records_fts, rowid, text) "
                            "VALUES ('delete', ?, ?)", (rowid, text or ""))
                removed.setdefault(kind, []).append(rowid)
            cur.executemany("DELETE FROM records_words WHERE rowid = ?", [(r[0],) for r in rows])
            cur.executemany("DELETE FROM records WHERE rowid = ?", [(r[0],) for r in rows])
        self.db.commit()
        return removed

    def digests(self) -> dict[str, str]:
        """id -> digest of every record, for an incremental build to compare against."""
        return dict(self.db.execute("SELECT id, digest FROM records"))

    def fingerprint(self) -> str:
        """One hash of every record's id and digest, in id order."""
        digest = hashlib.sha256()
        for rec_id, rec_digest in self.db.execute("SELECT id, digest FROM records ORDER BY id"):
            digest.update(f"{rec_id}\0{rec_digest}\1".encode())
        return digest.hexdigest()

    def get(self, rowids: Iterable[int]) -> dict[int, Record]:
        wanted = [int(i) for i in rowids if int(i) >= 0]
        found: dict[int, Record] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            cur = self.db.execute(
                f"SELECT rowid, {','.join(_COLUMNS)} FROM records "
                f"WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)
            for row in cur:
                found[row[0]] = _to_record(row[1:])
        return found

    def by_id(self, record_id: str) -> Record | None:
        row = self.db.execute(f"SELECT {','.join(_COLUMNS)} FROM records WHERE id = ?",
                              (record_id,)).fetchone()
        return _to_record(row) if row else None

    def by_study(self, study: str, kind: str | None = None) -> list[Record]:
        if not study:
            return []
        sql = f"SELECT {','.join(_COLUMNS)} FROM records WHERE study = ?"
        args: list[str] = [study]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        return [_to_record(row) for row in self.db.execute(sql + " ORDER BY rowid", args)]

    def ids_where(self, kind: str, filters: dict[str, str | list[str]] | None = None) -> list[int]:
        """Row ids of a kind that match every filter: a field of FILTER_FIELDS or "meta.<key>",
        equal to a value, or to any of a list of values."""
        sql, args = "SELECT rowid FROM records WHERE kind = ?", [kind]
        for name, value in (filters or {}).items():
            if name in FILTER_FIELDS:
                column = name
            elif _META_KEY.match(name):
                column = f"json_extract(meta, '$.{name[5:]}')"
            else:
                raise InputError(f"cannot filter on {name!r}; filters: {', '.join(FILTER_FIELDS)} "
                                 "or meta.<key>")
            values = [value] if isinstance(value, str) else list(value)
            sql += f" AND {column} IN ({','.join('?' * len(values))})"
            args += [str(v) for v in values]
        return [row[0] for row in self.db.execute(sql, args)]

    def lexical(self, text: str, kind: str, k: int,
                allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """Full-text BM25 search within a kind: [(rowid, bm25 score)], best first. Chinese is
        matched on jieba words (with a radiology lexicon), other text on character trigrams."""
        if has_cjk(text) and self._has_words():
            terms, table, column = words(text), "records_words", "words"
        else:
            terms, table, column = re.findall(r"\w+", text), "records_fts", "text"
            terms = [t for t in terms if len(t) >= 3]  # the trigram tokenizer's minimum
        terms = list(dict.fromkeys(t for t in terms if t.strip()))
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', "") + '"' for t in terms[:32])
        cur = self.db.execute(
            f"SELECT {table}.rowid, -bm25({table}) FROM {table} "
            f"JOIN records ON records.rowid = {table}.rowid "
            f"WHERE {table} MATCH ? AND records.kind = ? ORDER BY bm25({table}) LIMIT ?",
            (f"{column}: ({match})", kind, k * 4 if allowed is not None else k))
        hits = [(rowid, score) for rowid, score in cur if allowed is None or rowid in allowed]
        return hits[:k]

    def _has_words(self) -> bool:
        """Stores written before the word index existed search Chinese by trigrams."""
        if not hasattr(self, "_words"):
            self._words = bool(self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'records_words'").fetchone())
        return self._words

    def counts(self) -> dict[str, dict[str, int]]:
        """{kind: {domain: count}} for the manifest."""
        out: dict[str, dict[str, int]] = {}
        for kind, domain, n in self.db.execute(
                "SELECT kind, domain, COUNT(*) FROM records GROUP BY kind, domain"):
            out.setdefault(kind, {})[domain or "unknown"] = n
        return out

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM records").fetchone()[0]


def _to_record(row: Sequence) -> Record:
    data = dict(zip(_COLUMNS, row))
    data["meta"] = json.loads(data["meta"] or "{}")
    return Record.from_dict(data)
