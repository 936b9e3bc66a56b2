"""The node's durable state: one SQLite database (WAL) with versioned migrations.

Everything a node must remember across a crash lives here: jobs, results, disputes, votes, the
transaction journal, watcher cursors and blob pins. The repository API returns frozen dataclasses;
role-specific fields go in each row's ``data`` (JSON), so the roles can grow without a migration
for every field (the columns are the ones something queries or orders by).

Threading: one connection guarded by a lock; every public method is one short transaction, and
``with store.transaction():`` groups several into one atomic write. Async callers use
:meth:`StateStore.run`, which runs a call on the store's own single worker thread: a commit
fsyncs (``synchronous=FULL``, so a journaled transaction survives power loss, not only a
SIGKILL) and must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry, Gauge

P = ParamSpec("P")
T = TypeVar("T")

# Version i+1 is MIGRATIONS[i]. Append only: a released migration is never edited.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            model_id TEXT NOT NULL,
            status TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX jobs_status ON jobs(status)",
        """CREATE TABLE results (
            result_id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            status TEXT NOT NULL,
            challenge_deadline INTEGER,
            data TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX results_status ON results(status)",
        "CREATE INDEX results_job ON results(job_id)",
        """CREATE TABLE disputes (
            dispute_id TEXT PRIMARY KEY,
            result_id TEXT NOT NULL,
            state TEXT NOT NULL,
            seg_start INTEGER NOT NULL,
            seg_end INTEGER NOT NULL,
            round INTEGER NOT NULL,
            deadline INTEGER,
            closed INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL DEFAULT '{}',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX disputes_open ON disputes(closed, deadline)",
        """CREATE TABLE votes (
            dispute_id TEXT NOT NULL,
            voter TEXT NOT NULL,
            verdict TEXT NOT NULL,
            signature BLOB NOT NULL,
            submitted INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            PRIMARY KEY (dispute_id, voter))""",
        """CREATE TABLE tx_journal (
            key TEXT PRIMARY KEY,
            sender TEXT NOT NULL,
            chain_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            nonce INTEGER NOT NULL,
            to_addr TEXT,
            data BLOB NOT NULL,
            value TEXT NOT NULL,
            gas INTEGER NOT NULL,
            status TEXT NOT NULL,
            tx_hash TEXT,
            block_number INTEGER,
            gas_used INTEGER,
            effective_gas_price TEXT,
            error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        "CREATE INDEX tx_journal_sender ON tx_journal(sender, chain_id, status, nonce)",
        """CREATE TABLE tx_attempts (
            tx_hash TEXT PRIMARY KEY,
            key TEXT NOT NULL REFERENCES tx_journal(key),
            raw BLOB NOT NULL,
            max_fee TEXT NOT NULL,
            priority_fee TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        "CREATE INDEX tx_attempts_key ON tx_attempts(key, created_at)",
        """CREATE TABLE watcher_cursor (
            name TEXT PRIMARY KEY,
            block_number INTEGER NOT NULL,
            block_hash TEXT NOT NULL)""",
        """CREATE TABLE watcher_log (
            name TEXT NOT NULL,
            block_number INTEGER NOT NULL,
            block_hash TEXT NOT NULL,
            log_index INTEGER NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (name, block_number, log_index))""",
        """CREATE TABLE blob_pins (
            digest TEXT NOT NULL,
            owner TEXT NOT NULL,
            until INTEGER,
            PRIMARY KEY (digest, owner))""",
        "CREATE INDEX blob_pins_owner ON blob_pins(owner)",
    ),
    # 2: every event of a job the node still follows, kept until the job is closed (the
    # watcher_log above only spans the reorg window, so views rebuilt from it forgot every job
    # older than 256 blocks). The cursors are reset so the watcher rescans the chain from the
    # deployment block once (batch by batch, resumable) and fills the new table.
    (
        """CREATE TABLE job_events (
            feed TEXT NOT NULL,
            job_id TEXT NOT NULL,
            block_number INTEGER NOT NULL,
            block_hash TEXT NOT NULL,
            log_index INTEGER NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (feed, block_number, log_index))""",
        "CREATE INDEX job_events_job ON job_events(feed, job_id)",
        "DELETE FROM watcher_log",
        "DELETE FROM watcher_cursor",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    pass


class SchemaTooNewError(StoreError):
    """The database was written by a newer taonode; running older code on it could corrupt it."""


class TxStatus(StrEnum):
    SIGNED = "signed"
    """Journaled and signed; maybe not broadcast yet (a crash here is re-broadcast at start)."""
    BROADCAST = "broadcast"
    MINED = "mined"
    """Included with status 1, not yet ``confirmations`` deep (a reorg can still undo it)."""
    CONFIRMED = "confirmed"
    REVERTED = "reverted"
    """Included with status 0 (the simulation passed but the chain state changed)."""
    DROPPED = "dropped"
    """Its nonce was used by a transaction that is not ours: it can never be mined."""


PENDING_TX = (TxStatus.SIGNED, TxStatus.BROADCAST, TxStatus.MINED)
FINAL_TX = (TxStatus.CONFIRMED, TxStatus.REVERTED, TxStatus.DROPPED)


@dataclass(frozen=True)
class Job:
    job_id: str
    model_id: str
    status: str
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Result:
    result_id: str
    job_id: str
    status: str
    challenge_deadline: int | None = None
    """Chain time (seconds) at which the challenge window closes; None while unknown."""
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Dispute:
    dispute_id: str
    result_id: str
    state: str
    seg_start: int
    seg_end: int
    round: int
    deadline: int | None = None
    """Chain time (seconds) of the current move's deadline."""
    closed: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Vote:
    dispute_id: str
    voter: str
    verdict: str
    signature: bytes
    submitted: bool = False
    created_at: float = 0.0


@dataclass(frozen=True)
class TxAttempt:
    tx_hash: str
    key: str
    raw: bytes
    max_fee: int
    priority_fee: int
    created_at: float


@dataclass(frozen=True)
class TxRecord:
    key: str
    """Idempotency key, e.g. ``commit:<job>`` or ``move:<dispute>:<round>``."""
    sender: str
    chain_id: int
    kind: str
    nonce: int
    to: str | None
    data: bytes
    value: int
    gas: int
    status: TxStatus
    tx_hash: str | None
    """The mined attempt's hash once known, else the latest attempt's."""
    block_number: int | None = None
    gas_used: int | None = None
    effective_gas_price: int | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Cursor:
    name: str
    block_number: int
    block_hash: str


@dataclass(frozen=True)
class DeliveredLog:
    block_number: int
    block_hash: str
    log_index: int
    payload: Mapping[str, Any]


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class StateStore:
    """SQLite state under the data dir; see the module docstring for the threading rules."""

    def __init__(
        self,
        path: Path,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
        # what `transaction()` spans.
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self._conn.close()
            raise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        if registry is not None:
            gauge = Gauge(
                "taonode_state_db_bytes",
                "Size of the SQLite state database including its WAL",
                registry=registry,
            )
            gauge.set_function(self.size_bytes)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"state database {self.path} has schema version {current}, but this taonode "
                f"only knows versions up to {SCHEMA_VERSION}: it was written by a newer taonode. "
                "Upgrade taonode, or point the node at another data directory."
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                for statement in MIGRATIONS[version - 1]:
                    self._conn.execute(statement)
                # user_version lives in the database header and commits with the migration.
                self._conn.execute(f"PRAGMA user_version={version:d}")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            self._conn.close()

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += Path(str(self.path) + suffix).stat().st_size
        return total

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store call on the store's worker thread (commits fsync; keep the loop free)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write; nested uses join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            # IMMEDIATE takes the write lock up front: no upgrade deadlock with another process.
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.transaction():
            return self._conn.execute(sql, params).rowcount

    # -- jobs --------------------------------------------------------------------------------

    def put_job(self, job: Job) -> Job:
        now = self._clock()
        with self.transaction():
            old = self.get_job(job.job_id)
            created = old.created_at if old else now
            self._conn.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?)",
                (job.job_id, job.model_id, job.status, _json(job.data), created, now),
            )
        return Job(job.job_id, job.model_id, job.status, job.data, created, now)

    def get_job(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE job_id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, status: str | None = None) -> list[Job]:
        if status is None:
            return [_job(r) for r in self._query("SELECT * FROM jobs ORDER BY created_at")]
        rows = self._query("SELECT * FROM jobs WHERE status=? ORDER BY created_at", (status,))
        return [_job(r) for r in rows]

    # -- results -----------------------------------------------------------------------------

    def put_result(self, result: Result) -> Result:
        now = self._clock()
        with self.transaction():
            old = self.get_result(result.result_id)
            created = old.created_at if old else now
            self._conn.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?)",
                (
                    result.result_id,
                    result.job_id,
                    result.status,
                    result.challenge_deadline,
                    _json(result.data),
                    created,
                    now,
                ),
            )
        return Result(
            result.result_id,
            result.job_id,
            result.status,
            result.challenge_deadline,
            result.data,
            created,
            now,
        )

    def get_result(self, result_id: str) -> Result | None:
        rows = self._query("SELECT * FROM results WHERE result_id=?", (result_id,))
        return _result(rows[0]) if rows else None

    def results(self, status: str | None = None) -> list[Result]:
        if status is None:
            return [_result(r) for r in self._query("SELECT * FROM results ORDER BY created_at")]
        rows = self._query("SELECT * FROM results WHERE status=? ORDER BY created_at", (status,))
        return [_result(r) for r in rows]

    # -- disputes ----------------------------------------------------------------------------

    def put_dispute(self, dispute: Dispute) -> Dispute:
        now = self._clock()
        with self.transaction():
            old = self.get_dispute(dispute.dispute_id)
            created = old.created_at if old else now
            self._conn.execute(
                "INSERT OR REPLACE INTO disputes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    dispute.dispute_id,
                    dispute.result_id,
                    dispute.state,
                    dispute.seg_start,
                    dispute.seg_end,
                    dispute.round,
                    dispute.deadline,
                    int(dispute.closed),
                    _json(dispute.data),
                    created,
                    now,
                ),
            )
        return _replace_times(dispute, created, now)

    def get_dispute(self, dispute_id: str) -> Dispute | None:
        rows = self._query("SELECT * FROM disputes WHERE dispute_id=?", (dispute_id,))
        return _dispute(rows[0]) if rows else None

    def open_disputes(self) -> list[Dispute]:
        """Open disputes, the nearest deadline first (a node restarts by walking this list)."""
        rows = self._query(
            "SELECT * FROM disputes WHERE closed=0 ORDER BY deadline IS NULL, deadline, created_at"
        )
        return [_dispute(r) for r in rows]

    # -- votes -------------------------------------------------------------------------------

    def put_vote(self, vote: Vote) -> bool:
        """Record a vote; False if this voter already has one for the dispute (first one wins)."""
        with self.transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO votes VALUES (?,?,?,?,?,?)",
                (
                    vote.dispute_id,
                    vote.voter,
                    vote.verdict,
                    vote.signature,
                    int(vote.submitted),
                    self._clock(),
                ),
            )
            return cur.rowcount == 1

    def mark_votes_submitted(self, dispute_id: str, voters: Sequence[str]) -> None:
        with self.transaction():
            self._conn.executemany(
                "UPDATE votes SET submitted=1 WHERE dispute_id=? AND voter=?",
                [(dispute_id, v) for v in voters],
            )

    def votes(self, dispute_id: str) -> list[Vote]:
        rows = self._query(
            "SELECT * FROM votes WHERE dispute_id=? ORDER BY created_at, voter", (dispute_id,)
        )
        return [
            Vote(
                r["dispute_id"],
                r["voter"],
                r["verdict"],
                bytes(r["signature"]),
                bool(r["submitted"]),
                r["created_at"],
            )
            for r in rows
        ]

    # -- transaction journal -----------------------------------------------------------------

    def journal_insert(self, record: TxRecord, attempt: TxAttempt) -> TxRecord:
        """Journal a signed transaction before it is broadcast (one transaction, fsynced)."""
        now = self._clock()
        with self.transaction():
            self._conn.execute(
                "INSERT INTO tx_journal VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.key,
                    record.sender,
                    record.chain_id,
                    record.kind,
                    record.nonce,
                    record.to,
                    record.data,
                    str(record.value),
                    record.gas,
                    record.status.value,
                    attempt.tx_hash,
                    None,
                    None,
                    None,
                    None,
                    now,
                    now,
                ),
            )
            self._insert_attempt(attempt)
        got = self.journal_get(record.key)
        assert got is not None
        return got

    def _insert_attempt(self, attempt: TxAttempt) -> None:
        self._conn.execute(
            "INSERT INTO tx_attempts VALUES (?,?,?,?,?,?)",
            (
                attempt.tx_hash,
                attempt.key,
                attempt.raw,
                str(attempt.max_fee),
                str(attempt.priority_fee),
                attempt.created_at,
            ),
        )

    def journal_add_attempt(self, attempt: TxAttempt) -> None:
        """Journal a replacement (same nonce, higher fee) before it is broadcast."""
        with self.transaction():
            self._insert_attempt(attempt)
            self._conn.execute(
                "UPDATE tx_journal SET tx_hash=?, updated_at=? WHERE key=?",
                (attempt.tx_hash, self._clock(), attempt.key),
            )

    def journal_update(
        self,
        key: str,
        status: TxStatus,
        *,
        tx_hash: str | None = None,
        block_number: int | None = None,
        gas_used: int | None = None,
        effective_gas_price: int | None = None,
        error: str | None = None,
    ) -> None:
        with self.transaction():
            n = self._conn.execute(
                """UPDATE tx_journal SET status=?, tx_hash=COALESCE(?, tx_hash), block_number=?,
                   gas_used=?, effective_gas_price=?, error=?, updated_at=? WHERE key=?""",
                (
                    status.value,
                    tx_hash,
                    block_number,
                    gas_used,
                    None if effective_gas_price is None else str(effective_gas_price),
                    error,
                    self._clock(),
                    key,
                ),
            ).rowcount
            if n != 1:
                raise StoreError(f"no journal entry {key!r}")

    def journal_get(self, key: str) -> TxRecord | None:
        rows = self._query("SELECT * FROM tx_journal WHERE key=?", (key,))
        return _tx(rows[0]) if rows else None

    def journal_for_sender(
        self, sender: str, chain_id: int, statuses: Sequence[TxStatus] | None = None
    ) -> list[TxRecord]:
        sql = "SELECT * FROM tx_journal WHERE sender=? AND chain_id=?"
        params: list[Any] = [sender, chain_id]
        if statuses is not None:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            params += [s.value for s in statuses]
        return [_tx(r) for r in self._query(sql + " ORDER BY nonce, created_at", params)]

    def journal_max_nonce(self, sender: str, chain_id: int) -> int | None:
        """Highest nonce this sender journaled for a transaction that can still be mined."""
        rows = self._query(
            "SELECT MAX(nonce) FROM tx_journal WHERE sender=? AND chain_id=? AND status != ?",
            (sender, chain_id, TxStatus.DROPPED.value),
        )
        value = rows[0][0]
        return None if value is None else int(value)

    def attempts(self, key: str) -> list[TxAttempt]:
        rows = self._query(
            "SELECT * FROM tx_attempts WHERE key=? ORDER BY created_at, rowid", (key,)
        )
        return [
            TxAttempt(
                r["tx_hash"],
                r["key"],
                bytes(r["raw"]),
                int(r["max_fee"]),
                int(r["priority_fee"]),
                r["created_at"],
            )
            for r in rows
        ]

    # -- watcher -----------------------------------------------------------------------------

    def get_cursor(self, name: str) -> Cursor | None:
        rows = self._query("SELECT * FROM watcher_cursor WHERE name=?", (name,))
        return Cursor(name, rows[0]["block_number"], rows[0]["block_hash"]) if rows else None

    def advance_cursor(self, cursor: Cursor, delivered: Sequence[DeliveredLog]) -> None:
        """Move the cursor and record what was handed out up to it (for later retraction)."""
        with self.transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO watcher_cursor VALUES (?,?,?)",
                (cursor.name, cursor.block_number, cursor.block_hash),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO watcher_log VALUES (?,?,?,?,?)",
                [
                    (cursor.name, d.block_number, d.block_hash, d.log_index, _json(d.payload))
                    for d in delivered
                ],
            )

    def delivered_logs(self, name: str, after_block: int = -1) -> list[DeliveredLog]:
        rows = self._query(
            """SELECT * FROM watcher_log WHERE name=? AND block_number>?
               ORDER BY block_number, log_index""",
            (name, after_block),
        )
        return [
            DeliveredLog(
                r["block_number"], r["block_hash"], r["log_index"], json.loads(r["payload"])
            )
            for r in rows
        ]

    def rewind_cursor(self, cursor: Cursor) -> None:
        """After a reorg: forget what was delivered above the common ancestor."""
        with self.transaction():
            self._conn.execute(
                "DELETE FROM watcher_log WHERE name=? AND block_number>?",
                (cursor.name, cursor.block_number),
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO watcher_cursor VALUES (?,?,?)",
                (cursor.name, cursor.block_number, cursor.block_hash),
            )

    def prune_delivered(self, name: str, below_block: int) -> None:
        """Forget the reorg journal below ``below_block`` (job views never read it)."""
        self._write("DELETE FROM watcher_log WHERE name=? AND block_number<?", (name, below_block))

    # -- job events (what the protocol views are rebuilt from) -------------------------------

    def put_job_event(self, feed: str, job_id: str, event: DeliveredLog) -> None:
        """Keep a job's event (idempotent: a re-delivered event replaces itself)."""
        self._write(
            "INSERT OR REPLACE INTO job_events VALUES (?,?,?,?,?,?)",
            (
                feed,
                job_id,
                event.block_number,
                event.block_hash,
                event.log_index,
                _json(event.payload),
            ),
        )

    def drop_job_event(self, feed: str, block_number: int, log_index: int) -> None:
        """A reorg took the event off the chain."""
        self._write(
            "DELETE FROM job_events WHERE feed=? AND block_number=? AND log_index=?",
            (feed, block_number, log_index),
        )

    def job_events(self, feed: str) -> list[DeliveredLog]:
        """Every kept event, in chain order."""
        rows = self._query(
            "SELECT * FROM job_events WHERE feed=? ORDER BY block_number, log_index", (feed,)
        )
        return [
            DeliveredLog(
                r["block_number"], r["block_hash"], r["log_index"], json.loads(r["payload"])
            )
            for r in rows
        ]

    def forget_jobs(self, feed: str, job_ids: Sequence[str]) -> int:
        """Drop the events of closed jobs (the driver decides which are closed)."""
        with self.transaction():
            return sum(
                self._conn.execute(
                    "DELETE FROM job_events WHERE feed=? AND job_id=?", (feed, job_id)
                ).rowcount
                for job_id in job_ids
            )

    # -- blob pins (retention) ---------------------------------------------------------------

    def pin(self, digests: Sequence[str], owner: str, until: int | None = None) -> None:
        """Keep blobs while ``owner`` needs them: until chain time ``until``, or until unpinned.

        Owners are e.g. ``result:<id>`` (until the challenge window closes) and
        ``dispute:<id>`` (no end: unpinned when the dispute closes).
        """
        with self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO blob_pins VALUES (?,?,?)",
                [(d, owner, until) for d in digests],
            )

    def unpin(self, owner: str) -> int:
        return self._write("DELETE FROM blob_pins WHERE owner=?", (owner,))

    def pinned_digests(self, now: int) -> set[str]:
        """Digests some owner still needs at chain time ``now``."""
        rows = self._query(
            "SELECT DISTINCT digest FROM blob_pins WHERE until IS NULL OR until>?", (now,)
        )
        return {r[0] for r in rows}


def _job(r: sqlite3.Row) -> Job:
    return Job(
        r["job_id"],
        r["model_id"],
        r["status"],
        json.loads(r["data"]),
        r["created_at"],
        r["updated_at"],
    )


def _result(r: sqlite3.Row) -> Result:
    return Result(
        r["result_id"],
        r["job_id"],
        r["status"],
        r["challenge_deadline"],
        json.loads(r["data"]),
        r["created_at"],
        r["updated_at"],
    )


def _dispute(r: sqlite3.Row) -> Dispute:
    return Dispute(
        r["dispute_id"],
        r["result_id"],
        r["state"],
        r["seg_start"],
        r["seg_end"],
        r["round"],
        r["deadline"],
        bool(r["closed"]),
        json.loads(r["data"]),
        r["created_at"],
        r["updated_at"],
    )


def _replace_times(d: Dispute, created: float, updated: float) -> Dispute:
    return replace(d, created_at=created, updated_at=updated)


def _tx(r: sqlite3.Row) -> TxRecord:
    egp = r["effective_gas_price"]
    return TxRecord(
        key=r["key"],
        sender=r["sender"],
        chain_id=r["chain_id"],
        kind=r["kind"],
        nonce=r["nonce"],
        to=r["to_addr"],
        data=bytes(r["data"]),
        value=int(r["value"]),
        gas=r["gas"],
        status=TxStatus(r["status"]),
        tx_hash=r["tx_hash"],
        block_number=r["block_number"],
        gas_used=r["gas_used"],
        effective_gas_price=None if egp is None else int(egp),
        error=r["error"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )
