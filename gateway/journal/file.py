"""The journal's file: it owns the one SQLite connection, opens (creates, checks, upgrades) it privately, and
gives the journal's parts their two primitives, one IMMEDIATE transaction and one read."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import JournalError, JournalFull
from gateway.journal.schema import MIGRATE_1_TO_2, MIGRATE_2_TO_3, SCHEMA, SCHEMA_VERSION, VIEW_SCHEMA

log = logging.getLogger("tiyi.journal")


class JournalFile:
    """The connection the parts share (the journal is single-writer: one worker thread calls all of them)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, gw: str) -> None:
        self.db = conn
        self.path = path
        self.gw = gw

    @classmethod
    def open(cls, path: Path, gw: str) -> tuple[JournalFile, int]:
        """Open (or create) the file and return it with the next record seq. It and its directory are private
        to the service user, whatever the umask (outside systemd's ``UMask=0077`` it is usually 022, which
        made them world-readable)."""
        try:
            _private_dir(path.parent)
            # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files it creates later
            # the database file's own permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
            _private_file(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Freed content is zeroed, not left in free pages: retention must leave no trace of a reading.
            conn.execute("PRAGMA secure_delete=ON")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            for extra in ("-wal", "-shm"):  # left by an older version with looser modes
                _private_file(path.with_name(path.name + extra), missing_ok=True)
            if check != "ok":
                raise JournalError(
                    f"journal {path} is corrupt ({check}); keep the file for analysis and restore from backup"
                )
            conn.executescript(SCHEMA + VIEW_SCHEMA)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [("schema", str(SCHEMA_VERSION)), ("gw", gw), ("next_seq", "1")],
                )
                conn.execute("COMMIT")
                rows = {"schema": str(SCHEMA_VERSION), "gw": gw, "next_seq": "1"}
            if rows.get("schema") == "1" and rows.get("gw") == gw:
                _migrate(conn, MIGRATE_1_TO_2)
                log.info("journal %s upgraded from schema 1 to 2 (one anchor queue for batches and roll-ups)", path)
                rows["schema"] = "2"
            if rows.get("schema") == "2" and rows.get("gw") == gw:
                _migrate(conn, MIGRATE_2_TO_3)
                log.info("journal %s upgraded from schema 2 to 3 (audience views)", path)
                rows["schema"] = "3"
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        except JournalError:
            raise
        except OSError as exc:  # creating or tightening the directory or files
            raise JournalError(f"cannot open journal {path}: {exc.strerror or exc}") from exc
        if rows.get("gw") != gw:
            conn.close()
            raise JournalError(
                f"journal {path} belongs to gateway {rows.get('gw')!r}, not {gw!r}; a gateway id "
                "must never change under an existing journal (seq numbers are per gateway)"
            )
        if rows.get("schema") != str(SCHEMA_VERSION):
            conn.close()
            raise JournalError(f"journal {path} has schema {rows.get('schema')}, this version needs {SCHEMA_VERSION}")
        max_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
        next_seq = max(int(rows["next_seq"]), max_seq + 1)
        return cls(conn, path, gw), next_seq

    def close(self) -> None:
        self.db.close()

    def tx(self, sql_batches: Iterable[tuple[str, Sequence[object] | Iterable[Sequence[object]], bool]]) -> list[int]:
        """Run statements in one IMMEDIATE transaction; roll back and translate errors. Returns each statement's
        row count (rows inserted, updated or deleted; for an ``executemany``, over all its parameter sets), so a
        conditional write says itself whether it happened: no read-then-write."""
        counts: list[int] = []
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for sql, params, many in sql_batches:
                cur = self.db.executemany(sql, params) if many else self.db.execute(sql, params)  # type: ignore[arg-type]
                counts.append(cur.rowcount)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if _is_full(exc):
                raise JournalFull(f"journal disk is full ({self.path}): new data refused until space returns") from exc
            raise JournalError(f"journal write failed ({self.path}): {exc}") from exc
        return counts

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed ({self.path}): {exc}") from exc


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()


def _private_dir(path: Path) -> None:
    """Create the state directory 0700; tighten an existing one that other users can enter or read (if it
    is ours and not a shared directory such as /tmp), else warn: the journal holds health data."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return
    if st.st_uid == os.geteuid() and not mode & stat.S_ISVTX:
        path.chmod(0o700)
        log.warning("state directory %s was mode %03o, open to other users; changed it to 0700", path, mode)
    else:
        log.warning(
            "state directory %s is mode %03o, open to other users; keep the journal in a directory "
            "only the service user can enter (chmod 700)",
            path,
            mode,
        )


def _private_file(path: Path, missing_ok: bool = False) -> None:
    """Make a journal file 0600 (no-op if it already is)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    if mode != 0o600:
        path.chmod(0o600)


def _migrate(conn: sqlite3.Connection, steps: Sequence[tuple[str, Sequence[object]]]) -> None:
    """Upgrade in place, in one transaction: a crash or error leaves the old schema, untouched."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in steps:
            conn.execute(sql, params)
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def opt(v: Any, kind: type) -> Any:
    return None if v is None else kind(v)
