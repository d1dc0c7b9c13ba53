"""Append-only episode store: one SQLite file (WAL) per evaluation run (RUN_DIR/episodes.sqlite).

Every finished episode is one row, appended as soon as it ends, so a crashed or interrupted panel
resumes from `done_keys()` and loses only the episodes in flight. Rows are never updated or
deleted (triggers refuse it). Several processes may write at once: each opens its own
`EpisodeStore` (one connection each); WAL lets readers proceed during a write and
`busy_timeout` makes writers queue instead of failing with "database is locked".

Table `episodes` — key: UNIQUE(arm, condition, severity, pretrain_seed, eval_seed, episode):
    arm TEXT ("candidate"|"baseline"), encoder_sha TEXT, condition TEXT ("clean" or a
    perturbation name), severity INT, pretrain_seed INT, eval_seed INT, episode INT,
    success INT (0/1), final_distance REAL, steps INT, plan_time_s REAL,
    extra TEXT (JSON object), created_at TEXT (UTC, ISO 8601; set by the store).
Table `meta`: key TEXT PRIMARY KEY, value TEXT — run-level facts (the contract as JSON,
`created_at` of the store); `store.meta` reads and writes it like a dict of strings.

Duplicates: `add(row)` raises `DuplicateEpisode` when the key is already stored;
`add(row, ignore_duplicate=True)` returns False instead (True when the row was stored).
"""

from __future__ import annotations

import json
import math
import numbers
import sqlite3
from collections.abc import Iterable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

from jepalab.errors import JepalabError
from jepalab.io import now_iso

KEY = ("arm", "condition", "severity", "pretrain_seed", "eval_seed", "episode")
COLUMNS: dict[str, type] = {
    "arm": str, "encoder_sha": str, "condition": str, "severity": int, "pretrain_seed": int,
    "eval_seed": int, "episode": int, "success": int, "final_distance": float, "steps": int,
    "plan_time_s": float, "extra": str,
}
OPTIONAL = ("final_distance", "steps", "plan_time_s", "extra")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arm TEXT NOT NULL CHECK (arm IN ('candidate', 'baseline')),
    encoder_sha TEXT NOT NULL,
    condition TEXT NOT NULL,
    severity INTEGER NOT NULL,
    pretrain_seed INTEGER NOT NULL,
    eval_seed INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    success INTEGER NOT NULL CHECK (success IN (0, 1)),
    final_distance REAL,
    steps INTEGER,
    plan_time_s REAL,
    extra TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    UNIQUE (arm, condition, severity, pretrain_seed, eval_seed, episode)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS episodes_no_update BEFORE UPDATE ON episodes
    BEGIN SELECT RAISE(ABORT, 'episodes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS episodes_no_delete BEFORE DELETE ON episodes
    BEGIN SELECT RAISE(ABORT, 'episodes are append-only'); END;
"""


class DuplicateEpisode(JepalabError):
    """The episode key is already in the store."""


class Meta(MutableMapping[str, str]):
    """The store's `meta` table as a dict of strings (writes commit at once)."""

    def __init__(self, store: EpisodeStore) -> None:
        self._store = store

    def __getitem__(self, key: str) -> str:
        row = self._store._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return row[0]

    def __setitem__(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise JepalabError(f"meta[{key!r}]: values are strings (JSON-encode others), got "
                               f"{type(value).__name__}")
        with self._store._conn:
            self._store._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                      (key, value))

    def __delitem__(self, key: str) -> None:
        with self._store._conn:
            if self._store._conn.execute("DELETE FROM meta WHERE key = ?", (key,)).rowcount == 0:
                raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        keys = self._store._conn.execute("SELECT key FROM meta ORDER BY key").fetchall()
        return iter([k for (k,) in keys])

    def __len__(self) -> int:
        return self._store._conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0]


class EpisodeStore:
    """`EpisodeStore(path)`: open (creating if needed) the store; usable as a context manager."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")  # durable with WAL except on OS crash
            self._conn.executescript(_SCHEMA)
            # from here on "with conn:" wraps each write in one (deferred) transaction
            self._conn.isolation_level = "DEFERRED"
            with self._conn:
                self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                   ("created_at", now_iso()))
        except sqlite3.DatabaseError as e:
            raise JepalabError(f"{self.path}: cannot open the episode store ({e})") from None
        self.meta = Meta(self)

    # ------------------------------------------------------------------ writing

    def add(self, row: dict[str, Any], ignore_duplicate: bool = False) -> bool:
        """Append one episode; True if stored, False for a duplicate key when ignore_duplicate
        (else `DuplicateEpisode`). A missing, unknown or mistyped field is a `JepalabError`."""
        values = _row_values(row)
        try:
            with self._conn:
                self._conn.execute(_INSERT, values)
        except sqlite3.IntegrityError as e:
            if "UNIQUE" not in str(e):
                raise JepalabError(f"episode row rejected: {e}") from None
            if ignore_duplicate:
                return False
            key = {k: row[k] for k in KEY}
            raise DuplicateEpisode(f"{self.path}: episode {key} is already stored") from None
        return True

    def add_many(self, rows: Iterable[dict[str, Any]], ignore_duplicate: bool = False) -> int:
        """Append rows in one transaction (all or none); returns how many were stored."""
        values = [_row_values(r) for r in rows]
        sql = _INSERT.replace("INSERT", "INSERT OR IGNORE", 1) if ignore_duplicate else _INSERT
        try:
            with self._conn:
                before = self._conn.total_changes
                self._conn.executemany(sql, values)
                return self._conn.total_changes - before
        except sqlite3.IntegrityError as e:
            raise DuplicateEpisode(f"{self.path}: {e}; nothing from this batch was stored"
                                   ) from None

    # ------------------------------------------------------------------ reading

    def done_keys(self) -> set[tuple[str, str, int, int, int, int]]:
        """Keys (arm, condition, severity, pretrain_seed, eval_seed, episode) already stored."""
        return set(self._conn.execute(f"SELECT {', '.join(KEY)} FROM episodes").fetchall())

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        """Episodes in insertion order, filtered by column equality (a list/tuple/set value
        means "any of"); `extra` comes back as a dict."""
        where, args = [], []
        for col, val in filters.items():
            if col not in COLUMNS and col not in ("id", "created_at"):
                raise JepalabError(f"rows(): unknown column {col!r} (columns: "
                                   f"{', '.join(COLUMNS)})")
            if isinstance(val, (list, tuple, set, frozenset)):
                vals = [_plain(v) for v in val]
                where.append(f"{col} IN ({', '.join('?' * len(vals))})" if vals else "0")
                args.extend(vals)
            else:
                where.append(f"{col} = ?")
                args.append(_plain(val))
        sql = "SELECT * FROM episodes" + (" WHERE " + " AND ".join(where) if where else "")
        cur = self._conn.execute(sql + " ORDER BY id", args)
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            r = dict(zip(names, values))
            r["extra"] = json.loads(r["extra"])
            out.append(r)
        return out

    def to_records(self, **filters: Any) -> list[dict[str, Any]]:
        """Per-episode dicts for `rules.decide`, `rules.result_cells` and the card."""
        return self.rows(**filters)

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r})"


_INSERT = (f"INSERT INTO episodes ({', '.join(COLUMNS)}, created_at) "
           f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})")


def _row_values(row: dict[str, Any]) -> tuple[Any, ...]:
    unknown = [k for k in row if k not in COLUMNS]
    if unknown:
        raise JepalabError(f"episode row: unknown field {unknown[0]!r} (fields: "
                           f"{', '.join(COLUMNS)})")
    out: list[Any] = []
    for col, typ in COLUMNS.items():
        if col not in row or row[col] is None:
            if col not in OPTIONAL:
                raise JepalabError(f"episode row: missing field {col!r}")
            out.append("{}" if col == "extra" else None)
            continue
        v = row[col]
        if col == "extra":
            out.append(_extra_json(v))
        elif typ is float:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise JepalabError(f"episode row.{col}: expected a finite number, got {v!r}")
            out.append(float(v))
        elif typ is int:
            # bool is accepted for `success`; numpy integers have __index__
            if not hasattr(v, "__index__"):
                raise JepalabError(f"episode row.{col}: expected an integer, got {v!r}")
            out.append(int(v))
        else:
            if not isinstance(v, str) or not v:
                raise JepalabError(f"episode row.{col}: expected a non-empty string, got {v!r}")
            out.append(v)
    out.append(now_iso())
    return tuple(out)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars (sqlite3 binds only the built-in types)."""
    if isinstance(v, (str, bytes)) or v is None:
        return v
    if hasattr(v, "__index__"):
        return int(v)
    return float(v) if hasattr(v, "__float__") else v


def _extra_json(v: Any) -> str:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise JepalabError(f"episode row.extra: not valid JSON: {v[:60]!r}") from None
    if not isinstance(v, dict):
        raise JepalabError(f"episode row.extra: expected a JSON object, got {type(v).__name__}")
    try:
        return json.dumps(v, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise JepalabError(f"episode row.extra: not JSON-serialisable ({e})") from None
