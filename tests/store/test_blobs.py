"""Blob store: content addressing, verification on read, crash safety, retention and the cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from taonode.store.blobs import (
    BlobNotFound,
    BlobStore,
    BlobStoreFull,
    CorruptBlob,
    blake3_hex,
)

ROOT = Path(__file__).resolve().parents[2]


def test_put_get_roundtrip_succeeds(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = BlobStore(tmp_path, registry=registry)
    digest = store.put(b"tensor bytes")
    assert digest == blake3_hex(b"tensor bytes")
    assert store.put(b"tensor bytes") == digest  # idempotent
    assert store.get(digest) == b"tensor bytes"
    assert registry.get_sample_value("taonode_blob_bytes") == len(b"tensor bytes")
    assert registry.get_sample_value("taonode_blob_count") == 1
    with pytest.raises(BlobNotFound):
        store.get(blake3_hex(b"other"))
    # Reopening recounts what is on disk.
    assert BlobStore(tmp_path).total_bytes == len(b"tensor bytes")


def test_put_custom_digest_and_expected_mismatch_reverts(tmp_path: Path) -> None:
    import hashlib

    store = BlobStore(tmp_path, digest=lambda b: hashlib.sha256(b).hexdigest())
    digest = store.put(b"x")
    assert digest == hashlib.sha256(b"x").hexdigest()
    with pytest.raises(CorruptBlob, match="expected"):
        store.put(b"y", expected=digest)
    assert not store.has(hashlib.sha256(b"y").hexdigest())


def test_get_damaged_file_is_quarantined_reverts(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = BlobStore(tmp_path, registry=registry)
    digest = store.put(b"a" * 1000)
    path = tmp_path / "objects" / digest[:2] / digest
    path.write_bytes(b"a" * 999 + b"b")  # bit rot (or a write torn by a careless filesystem)
    with pytest.raises(CorruptBlob, match="damaged"):
        store.get(digest)
    assert not store.has(digest)
    assert registry.get_sample_value("taonode_blob_corrupt_total") == 1
    assert len(list((tmp_path / "quarantine").iterdir())) == 1
    assert store.total_bytes == 0
    store.put(b"a" * 1000)  # the good copy can be stored again
    assert store.get(digest) == b"a" * 1000


CHILD = """
import os, sys
from pathlib import Path
from taonode.store.blobs import BlobStore
store = BlobStore(Path(sys.argv[1]))
i = 0
while True:
    store.put(os.urandom(16) + bytes(8 << 20))
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


def test_put_survives_sigkill_mid_write_succeeds(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    root = tmp_path / "blobs"
    for attempt in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)], env=env, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.01 * (attempt + 1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if any((root / "tmp").iterdir()):
            break  # killed while a temp file was open: the case under test
    else:
        pytest.fail("never caught the child mid-write")
    store = BlobStore(root)
    assert list((root / "tmp").iterdir()) == []  # leftovers removed at start
    objects = [p for sub in (root / "objects").iterdir() for p in sub.iterdir()]
    assert objects
    for path in objects:
        assert len(store.get(path.name)) == 16 + (8 << 20)


def test_collect_keeps_pinned_and_recent_succeeds(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = BlobStore(tmp_path, grace_s=10, clock=lambda: now[0])
    old_pinned = store.put(b"pinned")
    old_free = store.put(b"free")
    for d in (old_pinned, old_free):
        p = tmp_path / "objects" / d[:2] / d
        os.utime(p, (now[0] - 100, now[0] - 100))
    recent = store.put(b"recent")
    os.utime(tmp_path / "objects" / recent[:2] / recent, (now[0], now[0]))
    report = store.collect({old_pinned})
    assert report.deleted == 1
    assert report.freed_bytes == len(b"free")
    assert store.has(old_pinned)
    assert store.has(recent)
    assert not store.has(old_free)


def test_put_over_cap_collects_then_refuses_reverts(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = BlobStore(tmp_path, max_bytes=250, grace_s=0, registry=registry)
    a = store.put(b"a" * 100)
    b = store.put(b"b" * 100)
    # 100 more bytes only fit once the unpinned blob b is collected.
    c = store.put(b"c" * 100, pinned=lambda: {a})
    assert store.has(a)
    assert not store.has(b)
    assert store.has(c)
    with pytest.raises(BlobStoreFull, match="pinned"):
        store.put(b"d" * 100, pinned=lambda: {a, c})
    assert store.has(a)
    assert store.has(c)
    assert registry.get_sample_value("taonode_blob_rejected_full_total") == 1
    assert registry.get_sample_value("taonode_blob_cap_bytes") == 250


def test_put_same_content_from_threads_counts_once_succeeds(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = BlobStore(tmp_path)
    data = bytes(1 << 20)
    with ThreadPoolExecutor(8) as pool:
        digests = set(pool.map(lambda _: store.put(data), range(16)))
    assert len(digests) == 1
    assert store.total_bytes == len(data)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert BlobStore(tmp_path).total_bytes == len(data)
