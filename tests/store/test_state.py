"""State store: migrations, the schema-too-new refusal, transactions and the repository API."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from taonode.store.state import (
    SCHEMA_VERSION,
    Cursor,
    DeliveredLog,
    Dispute,
    Job,
    Result,
    SchemaTooNewError,
    StateStore,
    TxAttempt,
    TxRecord,
    TxStatus,
    Vote,
)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.db")


def test_state_store_migrates_fresh_db_to_wal_succeeds(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    s = StateStore(tmp_path / "d" / "state.db", registry=registry)
    assert s.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "d" / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "results", "disputes", "votes", "tx_journal", "watcher_cursor"} <= tables
    conn.close()
    size = registry.get_sample_value("taonode_state_db_bytes")
    assert size is not None
    assert size > 0
    s.close()
    # Reopening an up-to-date database runs no migration and keeps the data.
    s = StateStore(tmp_path / "d" / "state.db")
    assert s.schema_version == SCHEMA_VERSION
    s.close()


def test_state_store_schema_newer_than_code_reverts(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer taonode"):
        StateStore(path)


def test_transaction_rolls_back_every_write_reverts(store: StateStore) -> None:
    def two_writes_then_crash() -> None:
        with store.transaction():
            store.put_job(Job("j1", "m", "new"))
            store.put_result(Result("r1", "j1", "committed"))
            raise RuntimeError("crash between two writes")

    with pytest.raises(RuntimeError):
        two_writes_then_crash()
    assert store.get_job("j1") is None
    assert store.get_result("r1") is None


def test_jobs_results_disputes_roundtrip_succeeds(store: StateStore) -> None:
    job = store.put_job(Job("j1", "m1", "new", {"input": "ab"}))
    assert store.get_job("j1") == job
    store.put_job(Job("j1", "m1", "done", {"input": "ab"}))
    got = store.get_job("j1")
    assert got is not None
    assert got.status == "done"
    assert got.created_at == job.created_at
    assert [j.job_id for j in store.jobs("done")] == ["j1"]
    assert store.jobs("new") == []

    store.put_result(Result("r1", "j1", "committed", challenge_deadline=1000, data={"n": 3}))
    r = store.get_result("r1")
    assert r is not None
    assert r.challenge_deadline == 1000
    assert r.data == {"n": 3}
    assert [x.result_id for x in store.results("committed")] == ["r1"]

    store.put_dispute(Dispute("d2", "r1", "prover_move", 0, 10, 0, deadline=None))
    store.put_dispute(Dispute("d1", "r1", "challenger_move", 4, 7, 2, deadline=500))
    store.put_dispute(Dispute("d3", "r1", "done", 3, 4, 3, deadline=100, closed=True))
    assert [d.dispute_id for d in store.open_disputes()] == ["d1", "d2"]
    d1 = store.get_dispute("d1")
    assert d1 is not None
    assert (d1.seg_start, d1.seg_end, d1.round) == (4, 7, 2)


def test_put_vote_first_wins_succeeds(store: StateStore) -> None:
    assert store.put_vote(Vote("d1", "0xA", "WITHIN_TOLERANCE", b"\x01" * 65))
    assert not store.put_vote(Vote("d1", "0xA", "EMPIRICAL_VIOLATION", b"\x02" * 65))
    assert store.put_vote(Vote("d1", "0xB", "EMPIRICAL_VIOLATION", b"\x03" * 65))
    store.mark_votes_submitted("d1", ["0xA"])
    votes = store.votes("d1")
    assert [(v.voter, v.verdict, v.submitted) for v in votes] == [
        ("0xA", "WITHIN_TOLERANCE", True),
        ("0xB", "EMPIRICAL_VIOLATION", False),
    ]
    assert votes[0].signature == b"\x01" * 65


def _record(key: str, nonce: int) -> tuple[TxRecord, TxAttempt]:
    rec = TxRecord(
        key, "0xS", 1, "commit", nonce, "0xC", b"\xaa", 2**70, 21000, TxStatus.SIGNED, None
    )
    return rec, TxAttempt(f"0xh{key}", key, b"raw", 2**65, 7, 1.0)


def test_journal_insert_duplicate_key_reverts(store: StateStore) -> None:
    store.journal_insert(*_record("commit:1", 0))
    with pytest.raises(sqlite3.IntegrityError):
        store.journal_insert(*_record("commit:1", 1))
    assert len(store.journal_for_sender("0xS", 1)) == 1


def test_journal_lifecycle_succeeds(store: StateStore) -> None:
    rec = store.journal_insert(*_record("commit:1", 0))
    assert rec.value == 2**70
    assert rec.tx_hash == "0xhcommit:1"
    store.journal_insert(*_record("commit:2", 1))
    store.journal_add_attempt(TxAttempt("0xrepl", "commit:1", b"raw2", 2**66, 9, 2.0))
    assert [a.tx_hash for a in store.attempts("commit:1")] == ["0xhcommit:1", "0xrepl"]
    store.journal_update(
        "commit:1",
        TxStatus.MINED,
        tx_hash="0xrepl",
        block_number=5,
        gas_used=21000,
        effective_gas_price=10**9,
    )
    store.journal_update("commit:2", TxStatus.DROPPED, error="nonce taken")
    got = store.journal_get("commit:1")
    assert got is not None
    assert got.status is TxStatus.MINED
    assert got.effective_gas_price == 10**9
    pending = store.journal_for_sender("0xS", 1, [TxStatus.SIGNED, TxStatus.MINED])
    assert [r.key for r in pending] == ["commit:1"]
    assert store.journal_max_nonce("0xS", 1) == 0  # the dropped nonce 1 can be reused
    assert store.journal_max_nonce("0xOther", 1) is None


def test_cursor_advance_and_rewind_succeeds(store: StateStore) -> None:
    assert store.get_cursor("w") is None
    logs = [DeliveredLog(b, f"0x{b}", i, {"event": "E", "i": i}) for b in (3, 5) for i in (0, 1)]
    store.advance_cursor(Cursor("w", 6, "0x6"), logs)
    assert store.get_cursor("w") == Cursor("w", 6, "0x6")
    assert store.delivered_logs("w", after_block=3) == logs[2:]
    store.rewind_cursor(Cursor("w", 4, "0x4"))
    assert store.delivered_logs("w") == logs[:2]
    store.prune_delivered("w", below_block=4)
    assert store.delivered_logs("w") == []


def test_pins_expire_and_unpin_succeeds(store: StateStore) -> None:
    store.pin(["a", "b"], "result:r1", until=100)
    store.pin(["b", "c"], "dispute:d1")
    assert store.pinned_digests(now=50) == {"a", "b", "c"}
    assert store.pinned_digests(now=100) == {"b", "c"}
    assert store.unpin("dispute:d1") == 2
    assert store.pinned_digests(now=100) == set()


async def test_run_executes_off_the_loop_succeeds(store: StateStore) -> None:
    import threading

    main = threading.get_ident()
    ident = await store.run(threading.get_ident)
    assert ident != main
    results = await asyncio.gather(
        *(store.run(store.put_job, Job(f"j{i}", "m", "new")) for i in range(20))
    )
    assert len(results) == 20
    assert len(store.jobs()) == 20
    store.close()


def test_migrate_to_next_version_keeps_data_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taonode.store.state as state

    path = tmp_path / "state.db"
    s = StateStore(path)
    s.put_job(Job("j1", "m", "new"))
    s.close()
    v2 = ("ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",)
    monkeypatch.setattr(state, "MIGRATIONS", (*state.MIGRATIONS, v2))
    monkeypatch.setattr(state, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    s = StateStore(path)
    assert s.schema_version == SCHEMA_VERSION + 1
    assert s.get_job("j1") is not None
    s.close()


def test_migrate_failing_step_rolls_back_reverts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taonode.store.state as state

    path = tmp_path / "state.db"
    StateStore(path).close()
    bad = ("CREATE TABLE extra (x INTEGER)", "THIS IS NOT SQL")
    monkeypatch.setattr(state, "MIGRATIONS", (*state.MIGRATIONS, bad))
    monkeypatch.setattr(state, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(sqlite3.OperationalError):
        StateStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables  # the whole step rolled back, not half of it
    conn.close()
