"""The results store: one SQLite file per study, artifacts (arrays, weights) in files beside it.

A *run* is one invocation of an experiment with a config; a *cell* is a unit of work with a stable key.
Several runs may share cells. Each cell is committed in one transaction the moment it is recorded, so a
process that is killed loses only the cells it had not finished; two processes may write to the same
store at once (WAL journal, busy timeout, and retries of a write that finds the store locked).

Layout next to the database file ``<folder>/<name>.db``::

    <folder>/artifacts/<key[:2]>/<key>/<name>.npy           arrays
    <folder>/artifacts/<key[:2]>/<key>/<name>.safetensors   weights (state dicts)

Every problem a user can fix (a file that is not a store, a corrupt or newer store, an unknown run, a
deleted artifact) raises :class:`StoreError`, whose message names the file and says what to do.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import random
import re
import secrets
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar
from urllib.parse import quote

import numpy as np
import torch

from .._validate import _scalar, check_choice, check_real

SCHEMA_VERSION = 1
APPLICATION = "transferlens"

RUN_STATUSES = ("running", "done", "interrupted", "failed")
FINISH_STATUSES = ("done", "interrupted", "failed")
CELL_STATUSES = ("done", "failed")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_IN_CHUNK = 500  # keys per "IN (...)" query, well below SQLite's variable limit

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    config_json TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    out_dir TEXT,
    library_version TEXT,
    torch_version TEXT,
    environment_json TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs (experiment, created);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL,
    finished REAL,
    seconds REAL,
    library_version TEXT,
    torch_version TEXT,
    error TEXT,
    payload_json TEXT
);
CREATE TABLE IF NOT EXISTS run_cells (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    cell_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (run_id, cell_key)
);
CREATE INDEX IF NOT EXISTS run_cells_by_key ON run_cells (cell_key);
CREATE TABLE IF NOT EXISTS results (
    cell_key TEXT NOT NULL REFERENCES cells (key) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    direction TEXT NOT NULL DEFAULT '',
    value REAL,
    PRIMARY KEY (cell_key, metric, direction)
);
CREATE TABLE IF NOT EXISTS artifacts (
    cell_key TEXT NOT NULL REFERENCES cells (key) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (cell_key, name)
);
"""
_TABLES = ("meta", "runs", "cells", "run_cells", "results", "artifacts")

_ARTIFACT_SUFFIX = {"array": ".npy", "weights": ".safetensors"}


class StoreError(ValueError):
    """A problem with a results store that the user can fix; the message names the file and what to do."""


# ----------------------------------------------------------------------------------------------- helpers


def _library_version() -> str:
    import transferlens  # at call time: the package may still be importing when this module loads

    return str(getattr(transferlens, "__version__", "0+unknown"))


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays, tensors and paths as plain JSON data; anything else is refused."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"a {type(obj).__name__} is not JSON data")


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _check_text(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise StoreError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
    if not empty and not value:
        raise StoreError(f"{name} must be a non-empty string")
    return value


def _check_key(key: Any) -> str:
    """A cell key: a non-empty string that is safe as a folder name (it names the artifact folder)."""
    _check_text(key, "cell key")
    if (
        len(key) > 255
        or key.startswith(".")
        or any(c in key for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in key)
    ):
        raise StoreError(
            f"cell key {key!r} cannot name a folder: use at most 255 characters, no '/', '\\' or control "
            "characters, and no leading '.'"
        )
    return key


def _check_name(name: Any, what: str) -> str:
    _check_text(name, f"{what} name")
    if not _NAME_RE.fullmatch(name):
        raise StoreError(
            f"{what} name {name!r} cannot name a file: use letters, digits, '_', '.' and '-' (at most 100 "
            "characters, not starting with '.' or '-')"
        )
    return name


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------- store


class Store:
    """A results store backed by one SQLite file (created with its folder when missing).

    ``timeout``: seconds a write waits for another process that holds the store before giving up with
    :class:`StoreError`. ``readonly=True`` opens an existing store for reading only (reports, exports):
    a missing file is an error instead of being created, and every write raises :class:`StoreError`.

    A store is safe to share between threads of one process (calls are serialised) and between
    processes (each opens its own ``Store`` on the same path). Use it as a context manager or call
    :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0, readonly: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise StoreError(f"store path must be a str or a path, got {path!r} ({type(path).__name__})")
        self.path = Path(os.fspath(path)).expanduser().absolute()
        self.artifact_root = self.path.parent / "artifacts"
        self.timeout = check_real(timeout, "timeout", nonnegative=True)
        self.readonly = bool(readonly)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._inherited: list[sqlite3.Connection] = []
        self._check_file()
        conn = self._connect()
        try:
            self._open(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ---------------------------------------------------------------------------------------- opening

    def _fail(self, problem: str, todo: str) -> StoreError:
        return StoreError(f"results store {self.path}: {problem}; {todo}")

    def _check_file(self) -> None:
        """Refuse what is clearly not an SQLite file before SQLite sees it (clearer messages)."""
        p = self.path
        if p.is_dir():
            raise self._fail("is a folder, not a file", "pass the path of a .db file (e.g. <folder>/runs.db)")
        if not p.exists():
            if self.readonly:
                raise self._fail(
                    "does not exist", "check the path, or run an experiment with this store first"
                )
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._fail(f"cannot create its folder ({exc})", "choose a path in a writable folder") from None
            return
        try:
            with open(p, "rb") as f:
                head = f.read(100)
        except OSError as exc:
            raise self._fail(f"cannot be read ({exc})", "check the file's permissions") from None
        if not head:
            return  # an empty file is a valid, empty SQLite database
        if head[:16] != _SQLITE_MAGIC[: len(head[:16])]:
            raise self._fail(
                "is not a transferlens results store (not an SQLite database)",
                "pass the path of a results store, or a new file name to start one",
            )
        if len(head) < 100:
            raise self._fail(
                f"is truncated ({len(head)} bytes, less than an SQLite header)",
                "restore it from a backup, or move it away and rerun to start a new store",
            )

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; every write is one explicit BEGIN IMMEDIATE ... COMMIT
        # and every read sees what other processes have committed. Calls are serialised by self._lock.
        options: dict[str, Any] = {"timeout": self.timeout, "isolation_level": None, "check_same_thread": False}
        try:
            if self.readonly:
                conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, **options)
            else:
                conn = sqlite3.connect(str(self.path), **options)
        except sqlite3.Error as exc:
            raise self._fail(f"cannot be opened ({exc})", "check the path and the folder's permissions") from None
        return conn

    def _open(self, conn: sqlite3.Connection) -> None:
        def inspect() -> list[str]:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            rows = conn.execute("PRAGMA quick_check").fetchall()
            if [r[0] for r in rows] != ["ok"]:
                detail = "; ".join(str(r[0]) for r in rows[:3])
                raise sqlite3.DatabaseError(f"integrity check failed: {detail}")
            conn.execute("PRAGMA foreign_keys = ON")
            return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

        # Everything is checked before anything is written: a database of another application, or of a
        # newer transferlens, is left exactly as it was.
        tables = self._retry(inspect, conn)
        if tables:
            self._check_meta(conn, tables)
        elif self.readonly:
            raise self._fail("is empty (no results recorded yet)", "run an experiment with this store first")
        if self.readonly:
            missing = [t for t in _TABLES if t not in tables]
            if missing:
                raise self._fail(f"lacks the tables {missing}", "open it once for writing to repair it")
            return

        def journal() -> None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")

        self._retry(journal, conn)
        if any(t not in tables for t in _TABLES):
            self._retry(lambda: self._initialise(conn), conn)
            # another process may have initialised it first, with a different schema version
            tables = self._retry(
                lambda: [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")], conn
            )
            self._check_meta(conn, tables)

    def _initialise(self, conn: sqlite3.Connection) -> None:
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            # re-read under the write lock: another program may have written to the file since it was checked
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if any(t not in _TABLES for t in tables):
                self._check_meta(conn, tables)  # raises: a database of another application
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("application", APPLICATION),
                    ("created", repr(time.time())),
                    ("library_version", _library_version()),
                ],
            )

    def _check_meta(self, conn: sqlite3.Connection, tables: list[str]) -> None:
        other_app = self._fail(
            f"is an SQLite database of another application (tables: {', '.join(sorted(tables)[:8])}), "
            "not a transferlens results store",
            "pass the path of a results store, or a new file name to start one",
        )
        if "meta" not in tables:
            raise other_app
        meta = dict(self._retry(lambda: conn.execute("SELECT key, value FROM meta").fetchall(), conn))
        if meta.get("application") != APPLICATION:
            raise other_app
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._fail(
                f"has an unreadable schema version {meta.get('schema_version')!r}",
                "restore it from a backup, or move it away and rerun to start a new store",
            ) from None
        if version > SCHEMA_VERSION:
            raise self._fail(
                f"was written by a newer transferlens (store schema version {version}; this version "
                f"{_library_version()} reads up to {SCHEMA_VERSION})",
                "upgrade transferlens (pip install -U transferlens) to read it",
            )
        if version < 1:
            raise self._fail(
                f"has an invalid schema version {version}",
                "restore it from a backup, or move it away and rerun to start a new store",
            )

    # --------------------------------------------------------------------------------------- plumbing

    def _wrap(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        low = text.lower()
        if _is_busy(exc):
            return self._fail(
                f"another process holds the store and did not release it within {self.timeout:g} s ({text})",
                "wait for the other run to finish, or pass a longer timeout",
            )
        if isinstance(exc, sqlite3.DatabaseError) and (
            "malformed" in low or "not a database" in low or "integrity" in low or "corrupt" in low
        ):
            return self._fail(
                f"is corrupt or truncated ({text})",
                "restore it from a backup, or move it away and rerun to start a new store",
            )
        if "readonly" in low or "read-only" in low:
            return self._fail(f"cannot be written ({text})", "check the file's and folder's permissions")
        if "disk is full" in low or "disk i/o" in low:
            return self._fail(f"cannot be written ({text})", "free disk space or move the store elsewhere")
        return self._fail(f"SQLite error: {text}", "check the file, or move it away and rerun to start a new store")

    def _retry(self, fn: Callable[[], _T], conn: sqlite3.Connection) -> _T:
        """Run ``fn`` (one statement or one whole transaction), again after a short pause while another
        process holds the store, for up to ``timeout`` seconds; SQLite errors become :class:`StoreError`."""
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                return fn()
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    try:
                        conn.rollback()
                    except sqlite3.Error:
                        pass
                if _is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(min(pause * (0.5 + random.random()), max(0.0, deadline - time.monotonic())))
                    pause = min(pause * 2, 0.25)
                    continue
                raise self._wrap(exc) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"results store {self.path} is closed; open a new Store to use it")
        if os.getpid() != self._pid:
            # A forked child must not use its parent's connection (SQLite locks are per process); keep the
            # inherited object alive (closing it could release the parent's locks) and open a new one.
            self._inherited.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
            conn = self._connect()
            self._retry(lambda: self._pragmas(conn), conn)
            self._conn = conn
        return self._conn

    def _pragmas(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not self.readonly:
            conn.execute("PRAGMA synchronous = NORMAL")

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._lock:
            conn = self._connection()
            return self._retry(lambda: fn(conn), conn)

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(
                f"results store {self.path} was opened read-only; open it with Store(path) to record results"
            )

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn`` inside one write transaction (taken at once: ``BEGIN IMMEDIATE``), retried while busy."""
        self._check_writable()
        with self._lock:
            conn = self._connection()

            def transaction() -> _T:
                with conn:
                    conn.execute("BEGIN IMMEDIATE")
                    return fn(conn)

            return self._retry(transaction, conn)

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and os.getpid() == self._pid:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Sent to another process (multiprocessing): it reopens the same file there.
        return (_reopen, (str(self.path), self.timeout, self.readonly))

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("read-only" if self.readonly else "open")
        return f"Store({str(self.path)!r}, {state})"

    # ------------------------------------------------------------------------------------------- JSON

    def _dumps(self, obj: Any, what: str, *, allow_nan: bool = False) -> str:
        try:
            return json.dumps(
                obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan,
                default=_json_default,
            )
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"{what} cannot be stored in {self.path.name}: {exc}; use plain JSON data (dict, list, str, "
                "int, finite float, bool, None)"
            ) from None

    @staticmethod
    def _loads(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    # ------------------------------------------------------------------------------------------- runs

    def begin_run(
        self,
        experiment: str,
        config: dict,
        *,
        run_id: str | None = None,
        out_dir: str | None = None,
        environment: dict | None = None,
    ) -> str:
        """Record the start of a run and return its id.

        The default id is ``<experiment>-<UTC yyyymmdd-HHMMSS>-<4 hex digits>``. An existing ``run_id``
        resumes that run: its status goes back to ``"running"`` and its creation time is kept; its experiment
        and config must be the ones it was started with (a run records what it computed)."""
        _check_text(experiment, "experiment")
        if run_id is not None:
            _check_text(run_id, "run_id")
        if not isinstance(config, Mapping):
            raise StoreError(f"config must be a dict, got {type(config).__name__}")
        config_json = self._dumps(dict(config), "the run config")
        env_json = None
        if environment is not None:
            env_json = self._dumps(dict(environment), "the run environment", allow_nan=True)
        out = None if out_dir is None else os.fspath(out_dir)
        now = time.time()
        lib, tv = _library_version(), torch.__version__

        def write(conn: sqlite3.Connection) -> str:
            if run_id is not None:
                row = conn.execute(
                    "SELECT experiment, config_json FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is not None:
                    if row[0] != experiment or row[1] != config_json:
                        problem = (
                            f"run {run_id} belongs to experiment {row[0]}, not {experiment}"
                            if row[0] != experiment
                            else f"run {run_id} was started with another config"
                        )
                        raise self._fail(
                            problem,
                            "resume it with the same experiment and config, or start a new run (finished "
                            "cells are reused either way)",
                        )
                    conn.execute(
                        "UPDATE runs SET status = 'running', finished = NULL, "
                        "out_dir = COALESCE(?, out_dir), environment_json = COALESCE(?, environment_json) "
                        "WHERE run_id = ?",
                        (out, env_json, run_id),
                    )
                    return run_id
                new_id = run_id
            else:
                prefix = _RUN_ID_UNSAFE.sub("-", experiment).strip("-") or "run"
                stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d-%H%M%S")
                while True:
                    new_id = f"{prefix}-{stamp}-{secrets.token_hex(2)}"
                    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (new_id,)).fetchone() is None:
                        break
            conn.execute(
                "INSERT INTO runs (run_id, experiment, config_json, status, created, finished, out_dir, "
                "library_version, torch_version, environment_json) VALUES (?, ?, ?, 'running', ?, NULL, ?, ?, ?, ?)",
                (new_id, experiment, config_json, now, out, lib, tv, env_json),
            )
            return new_id

        return self._write(write)

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise self._unknown_run(conn, run_id)

    def _unknown_run(self, conn: sqlite3.Connection, run_id: str) -> StoreError:
        ids = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY created DESC, rowid DESC LIMIT 11")]
        if not ids:
            known = "it holds no runs yet"
        else:
            n = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            more = f" and {n - 10} more" if n > 10 else ""
            known = f"known runs (newest first): {', '.join(ids[:10])}{more}"
        return self._fail(f"has no run {run_id!r}", f"pass one of its runs; {known}")

    def set_run_cells(self, run_id: str, keys: list[str]) -> None:
        """The cells of a run, in order (replaces any earlier list; a repeated key keeps its first place)."""
        _check_text(run_id, "run_id")
        if isinstance(keys, (str, bytes)):
            raise StoreError("keys must be a list of cell keys, not a single string")
        ordered = list(dict.fromkeys(_check_key(k) for k in keys))

        def write(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute("DELETE FROM run_cells WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO run_cells (run_id, cell_key, position) VALUES (?, ?, ?)",
                [(run_id, k, i) for i, k in enumerate(ordered)],
            )

        self._write(write)

    def finish_run(self, run_id: str, status: str) -> None:
        """Mark a run ``"done"``, ``"interrupted"`` or ``"failed"`` and note the time."""
        _check_text(run_id, "run_id")
        check_choice(status, "status", FINISH_STATUSES)
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute("UPDATE runs SET status = ?, finished = ? WHERE run_id = ?", (status, now, run_id))

        self._write(write)

    _RUN_QUERY = """
        SELECT r.run_id, r.experiment, r.config_json, r.status, r.created, r.finished, r.out_dir,
               r.library_version, r.torch_version, r.environment_json,
               (SELECT COUNT(*) FROM run_cells rc WHERE rc.run_id = r.run_id),
               (SELECT COUNT(*) FROM run_cells rc JOIN cells c ON c.key = rc.cell_key
                 WHERE rc.run_id = r.run_id AND c.status = 'done'),
               (SELECT COUNT(*) FROM run_cells rc JOIN cells c ON c.key = rc.cell_key
                 WHERE rc.run_id = r.run_id AND c.status = 'failed')
        FROM runs r
    """

    @classmethod
    def _run_dict(cls, row: tuple) -> dict[str, Any]:
        return {
            "run_id": row[0],
            "experiment": row[1],
            "config": cls._loads(row[2]),
            "status": row[3],
            "created": row[4],
            "finished": row[5],
            "out_dir": row[6],
            "library_version": row[7],
            "torch_version": row[8],
            "environment": cls._loads(row[9]),
            "n_cells": row[10],
            "n_done": row[11],
            "n_failed": row[12],
        }

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: its row (``config`` and ``environment`` parsed) and cell counts ``n_cells``, ``n_done``,
        ``n_failed``. Times are seconds since the epoch (``time.time()``)."""
        _check_text(run_id, "run_id")

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute(self._RUN_QUERY + " WHERE r.run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise self._unknown_run(conn, run_id)
            return self._run_dict(row)

        return self._read(read)

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first."""
        rows = self._read(lambda c: c.execute(self._RUN_QUERY + " ORDER BY r.created DESC, r.rowid DESC").fetchall())
        return [self._run_dict(r) for r in rows]

    def latest_run(self, experiment: str | None = None) -> dict[str, Any] | None:
        """The newest run (of ``experiment`` when given), or ``None``."""
        if experiment is None:
            rows = self._read(
                lambda c: c.execute(self._RUN_QUERY + " ORDER BY r.created DESC, r.rowid DESC LIMIT 1").fetchall()
            )
        else:
            _check_text(experiment, "experiment")
            rows = self._read(
                lambda c: c.execute(
                    self._RUN_QUERY + " WHERE r.experiment = ? ORDER BY r.created DESC, r.rowid DESC LIMIT 1",
                    (experiment,),
                ).fetchall()
            )
        return self._run_dict(rows[0]) if rows else None

    def find_run(self, experiment: str, config: dict) -> dict[str, Any] | None:
        """The newest run of ``experiment`` whose config is exactly ``config`` (as canonical JSON), or ``None``."""
        _check_text(experiment, "experiment")
        if not isinstance(config, Mapping):
            raise StoreError(f"config must be a dict, got {type(config).__name__}")
        config_json = self._dumps(dict(config), "the run config")
        rows = self._read(
            lambda c: c.execute(
                self._RUN_QUERY + " WHERE r.experiment = ? AND r.config_json = ? "
                "ORDER BY r.created DESC, r.rowid DESC LIMIT 1",
                (experiment, config_json),
            ).fetchall()
        )
        return self._run_dict(rows[0]) if rows else None

    # ------------------------------------------------------------------------------------------ cells

    def cell(self, key: str) -> dict[str, Any] | None:
        """A cell's row (``spec`` and ``payload`` parsed), or ``None`` when it was never recorded."""
        _check_text(key, "cell key")
        row = self._read(
            lambda c: c.execute(
                "SELECT key, kind, spec_json, status, started, finished, seconds, library_version, torch_version, "
                "error, payload_json FROM cells WHERE key = ?",
                (key,),
            ).fetchone()
        )
        if row is None:
            return None
        return {
            "key": row[0],
            "kind": row[1],
            "spec": self._loads(row[2]),
            "status": row[3],
            "started": row[4],
            "finished": row[5],
            "seconds": row[6],
            "library_version": row[7],
            "torch_version": row[8],
            "error": row[9],
            "payload": self._loads(row[10]),
        }

    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """The subset of ``keys`` whose cells are recorded as done."""
        if isinstance(keys, (str, bytes)):
            raise StoreError("keys must be an iterable of cell keys, not a single string")
        wanted = list(dict.fromkeys(_check_text(k, "cell key") for k in keys))

        def read(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i : i + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in conn.execute(f"SELECT key FROM cells WHERE status = 'done' AND key IN ({marks})", chunk)
                )
            return found

        return self._read(read)

    def _result_rows(self, key: str, results: Iterable[tuple[str, str, float | None]]) -> list[tuple]:
        rows: list[tuple] = []
        seen: set[tuple[str, str]] = set()
        for item in results:
            try:
                metric, direction, value = item
            except (TypeError, ValueError):
                raise StoreError(
                    f"each result of cell {key} must be a (metric, direction, value) triple, got {item!r}"
                ) from None
            _check_text(metric, f"metric of cell {key}")
            _check_text(direction, f"direction of metric {metric!r} of cell {key}", empty=True)
            if (metric, direction) in seen:
                raise StoreError(
                    f"cell {key} reports metric {metric!r} (direction {direction!r}) twice; report it once"
                )
            seen.add((metric, direction))
            if value is not None:
                v = _scalar(value)
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (numbers.Real, np.integer, np.floating)):
                    raise StoreError(
                        f"metric {metric!r} of cell {key} must be a number or None, got {value!r} "
                        f"({type(value).__name__})"
                    )
                value = float(v)
                if not math.isfinite(value):
                    raise StoreError(
                        f"NaN/inf value ({value}) for metric {metric!r} (direction {direction!r}) of cell {key}: "
                        f"{self.path.name} stores finite numbers only; report None for a metric without a value"
                    )
            rows.append((key, metric, direction, value))
        return rows

    def _artifact_dir(self, key: str) -> Path:
        return self.artifact_root / key[:2] / key

    def _write_artifacts(
        self,
        key: str,
        arrays: Mapping[str, Any] | None,
        weights: Mapping[str, Mapping[str, torch.Tensor]] | None,
    ) -> list[tuple[str, str, Path]]:
        """Serialise every artifact to a temporary file, then move them all into place; returns
        ``(name, kind, final path)``. Nothing is moved into place unless every artifact serialised."""
        items: list[tuple[str, str, Any]] = []
        for name, arr in (arrays or {}).items():
            _check_name(name, "array")
            if isinstance(arr, torch.Tensor):
                arr = arr.detach().cpu().numpy()
            arr = np.asarray(arr)
            if arr.dtype.hasobject:
                raise StoreError(f"array {name!r} of cell {key} has dtype object; store numeric arrays only")
            items.append((name, "array", arr))
        for name, state in (weights or {}).items():
            _check_name(name, "weights")
            if any(n == name for n, _, _ in items):
                raise StoreError(f"cell {key} has an array and weights both named {name!r}; give them distinct names")
            if not isinstance(state, Mapping):
                raise StoreError(
                    f"weights {name!r} of cell {key} must be a state dict (name -> tensor), got {type(state).__name__}"
                )
            tensors: dict[str, torch.Tensor] = {}
            for tname, t in state.items():
                if not isinstance(tname, str) or not isinstance(t, torch.Tensor):
                    raise StoreError(
                        f"weights {name!r} of cell {key} must map names (str) to tensors, got {tname!r}: "
                        f"{type(t).__name__}"
                    )
                if t.layout != torch.strided:
                    raise StoreError(
                        f"tensor {tname!r} in weights {name!r} of cell {key} is {t.layout}; store dense tensors"
                    )
                # a private dense CPU copy: safetensors refuses tensors that share memory (tied weights)
                tensors[tname] = t.detach().to("cpu").contiguous().clone()
            items.append((name, "weights", tensors))
        if not items:
            return []
        folder = self._artifact_dir(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(
                f"cannot create the artifact folder {folder} ({exc})", "check free space and permissions"
            ) from None
        staged: list[tuple[str, str, Path, Path]] = []
        try:
            for name, kind, obj in items:
                final = folder / f"{name}{_ARTIFACT_SUFFIX[kind]}"
                tmp = folder / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                staged.append((name, kind, final, tmp))
                if kind == "array":
                    with open(tmp, "wb") as f:
                        np.save(f, obj, allow_pickle=False)
                        f.flush()
                        os.fsync(f.fileno())
                else:
                    from safetensors.torch import save_file

                    save_file(obj, str(tmp))
                    _fsync_file(tmp)
            for _, _, final, tmp in staged:
                os.replace(tmp, final)
        except OSError as exc:
            for *_, tmp in staged:
                _unlink_quietly(tmp)
            raise self._fail(
                f"cannot write the artifacts of cell {key} ({exc})", "check free space and permissions"
            ) from None
        except BaseException:
            for *_, tmp in staged:
                _unlink_quietly(tmp)
            raise
        return [(name, kind, final) for name, kind, final, _ in staged]

    def record_cell(
        self,
        key: str,
        kind: str,
        spec: dict,
        *,
        results: Iterable[tuple[str, str, float | None]] = (),
        payload: Any = None,
        arrays: dict[str, np.ndarray] | None = None,
        weights: dict[str, dict[str, torch.Tensor]] | None = None,
        started: float | None = None,
        seconds: float | None = None,
        status: str = "done",
        error: str | None = None,
    ) -> None:
        """Commit a finished cell: its row, results and artifacts, all or nothing.

        ``results`` are ``(metric, direction, value)`` rows (``direction`` may be ``""``; ``value`` a finite
        number or ``None``, never NaN). ``payload`` is JSON data (NaN allowed there). ``arrays`` are saved as
        ``.npy``, ``weights`` (state dicts) as ``.safetensors`` files, before the transaction. ``started`` is a
        ``time.time()`` stamp, ``seconds`` the compute time. Recording a key again replaces its earlier
        record (results and artifacts included).
        """
        _check_key(key)
        _check_text(kind, "cell kind")
        if not isinstance(spec, Mapping):
            raise StoreError(f"spec of cell {key} must be a dict, got {type(spec).__name__}")
        check_choice(status, "status", CELL_STATUSES)
        if error is not None:
            _check_text(error, "error", empty=True)
        if started is not None:
            started = check_real(started, "started", nonnegative=True)
        if seconds is not None:
            seconds = check_real(seconds, "seconds", nonnegative=True)
        spec_json = self._dumps(dict(spec), f"the spec of cell {key}")
        payload_json = None if payload is None else self._dumps(payload, f"the payload of cell {key}", allow_nan=True)
        rows = self._result_rows(key, results)
        self._check_writable()
        finished = time.time()
        if started is None and seconds is not None:
            started = finished - seconds
        elif seconds is None and started is not None:
            seconds = max(0.0, finished - started)
        written = self._write_artifacts(key, arrays, weights)
        base = self.path.parent
        artifact_rows = [
            (key, name, kind_, final.relative_to(base).as_posix(), final.stat().st_size)
            for name, kind_, final in written
        ]
        lib, tv = _library_version(), torch.__version__

        def write(conn: sqlite3.Connection) -> list[str]:
            old = [r[0] for r in conn.execute("SELECT path FROM artifacts WHERE cell_key = ?", (key,))]
            conn.execute(
                "INSERT INTO cells (key, kind, spec_json, status, started, finished, seconds, library_version, "
                "torch_version, error, payload_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, spec_json = excluded.spec_json, "
                "status = excluded.status, started = excluded.started, finished = excluded.finished, "
                "seconds = excluded.seconds, library_version = excluded.library_version, "
                "torch_version = excluded.torch_version, error = excluded.error, payload_json = excluded.payload_json",
                (key, kind, spec_json, status, started, finished, seconds, lib, tv, error, payload_json),
            )
            self._replace_results(conn, key, rows)
            self._replace_artifacts(conn, key, artifact_rows)
            return old

        old_paths = self._write(write)
        # files of the earlier record that this one did not overwrite are no longer referenced
        new_paths = {r[3] for r in artifact_rows}
        for rel in old_paths:
            if rel not in new_paths:
                _unlink_quietly(base / rel)

    def _replace_results(self, conn: sqlite3.Connection, key: str, rows: list[tuple]) -> None:
        conn.execute("DELETE FROM results WHERE cell_key = ?", (key,))
        conn.executemany("INSERT INTO results (cell_key, metric, direction, value) VALUES (?, ?, ?, ?)", rows)

    def _replace_artifacts(self, conn: sqlite3.Connection, key: str, rows: list[tuple]) -> None:
        conn.execute("DELETE FROM artifacts WHERE cell_key = ?", (key,))
        conn.executemany("INSERT INTO artifacts (cell_key, name, kind, path, bytes) VALUES (?, ?, ?, ?, ?)", rows)

    def results(self, key: str) -> list[tuple[str, str, float | None]]:
        """A cell's ``(metric, direction, value)`` rows in the order they were recorded (empty if none)."""
        _check_text(key, "cell key")
        rows = self._read(
            lambda c: c.execute(
                "SELECT metric, direction, value FROM results WHERE cell_key = ? ORDER BY rowid", (key,)
            ).fetchall()
        )
        return [(m, d, v) for m, d, v in rows]

    def results_dict(self, key: str) -> dict[str, float | None]:
        """A cell's results as ``{"metric": value}`` (no direction) or ``{"metric_direction": value}``."""
        return {(m if not d else f"{m}_{d}"): v for m, d, v in self.results(key)}

    def artifacts(self, key: str) -> list[dict[str, Any]]:
        """A cell's artifacts: ``name``, ``kind`` (``"array"`` or ``"weights"``), ``path`` (absolute), ``bytes``."""
        _check_text(key, "cell key")
        rows = self._read(
            lambda c: c.execute(
                "SELECT name, kind, path, bytes FROM artifacts WHERE cell_key = ? ORDER BY rowid", (key,)
            ).fetchall()
        )
        return [{"name": n, "kind": k, "path": self.path.parent / p, "bytes": b} for n, k, p, b in rows]

    def _artifact_path(self, key: str, name: str, kind: str) -> Path:
        _check_text(key, "cell key")
        _check_text(name, f"{kind} name")
        rows = self._read(
            lambda c: c.execute("SELECT name, kind, path FROM artifacts WHERE cell_key = ?", (key,)).fetchall()
        )
        match = [r for r in rows if r[0] == name and r[1] == kind]
        if not match:
            have = [r[0] for r in rows if r[1] == kind]
            if not have:
                recorded = self._read(lambda c: c.execute("SELECT status FROM cells WHERE key = ?", (key,)).fetchone())
                state = "was never recorded" if recorded is None else f"is {recorded[0]} and has no {kind} artifacts"
                raise self._fail(f"cell {key} {state}", "compute the cell first (run its experiment)")
            raise self._fail(f"cell {key} has no {kind} named {name!r}", f"use one of {have}")
        path = self.path.parent / match[0][2]
        if not path.is_file():
            raise self._fail(
                f"the artifact file {path} of cell {key} was deleted",
                "rerun the experiment with --fresh to compute it again",
            )
        return path

    def load_array(self, key: str, name: str) -> np.ndarray:
        """An array recorded with a cell."""
        path = self._artifact_path(key, name, "array")
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise self._fail(
                f"the artifact file {path} of cell {key} is unreadable ({exc})",
                "rerun the experiment with --fresh to compute it again",
            ) from None

    def load_weights(self, key: str, name: str = "weights") -> dict[str, torch.Tensor]:
        """A state dict recorded with a cell (CPU tensors)."""
        path = self._artifact_path(key, name, "weights")
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            raise self._fail(
                f"the artifact file {path} of cell {key} is unreadable ({exc})",
                "rerun the experiment with --fresh to compute it again",
            ) from None

    def run_results(self, run_id: str) -> list[dict[str, Any]]:
        """Long rows for export, cells in the run's order: ``run_id``, ``cell_key``, ``kind``, ``metric``,
        ``direction``, ``value``."""
        _check_text(run_id, "run_id")

        def read(conn: sqlite3.Connection) -> list[tuple]:
            self._require_run(conn, run_id)
            return conn.execute(
                "SELECT rc.run_id, rc.cell_key, c.kind, r.metric, r.direction, r.value FROM run_cells rc "
                "JOIN cells c ON c.key = rc.cell_key JOIN results r ON r.cell_key = rc.cell_key "
                "WHERE rc.run_id = ? ORDER BY rc.position, r.rowid",
                (run_id,),
            ).fetchall()

        cols = ("run_id", "cell_key", "kind", "metric", "direction", "value")
        return [dict(zip(cols, r)) for r in self._read(read)]


def _reopen(path: str, timeout: float, readonly: bool) -> Store:
    return Store(path, timeout=timeout, readonly=readonly)
