"""Content-addressed blob store for tensors (trace outputs, frontiers, job inputs).

A blob is stored under its digest: ``<root>/objects/<d[:2]>/<d>``. Writes go to a temp file in
``<root>/tmp``, are fsynced, renamed into place and the directory fsynced, so a crash leaves
either the whole blob or a temp file that the next start deletes. Every read re-computes the
digest: a file damaged on disk is quarantined, never served.

The digest function is injectable: the runtime defines the canonical tensor digest (BLAKE3 over
dtype, shape and bytes); the default is BLAKE3 of the stored bytes.

Retention: the caller passes the set of pinned digests (from :meth:`StateStore.pinned_digests`:
results still in their challenge window, open disputes). Collection deletes unpinned blobs older
than a grace period (a trace is written before its result is committed and pinned). The size cap
never evicts a pinned blob: when pinned data alone fills the cap, writes fail with
:class:`BlobStoreFull` rather than losing evidence a dispute needs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path

import blake3
from prometheus_client import CollectorRegistry, Counter, Gauge

DigestFn = Callable[[bytes], str]


def blake3_hex(data: bytes) -> str:
    digest: str = blake3.blake3(data).hexdigest()
    return digest


class BlobError(Exception):
    pass


class BlobNotFound(BlobError, KeyError):
    pass


class CorruptBlob(BlobError):
    """The bytes on disk do not match their digest; the file was moved to quarantine."""


class BlobStoreFull(BlobError):
    """The size cap is reached by blobs that are still pinned."""


@dataclass(frozen=True)
class GcReport:
    deleted: int
    freed_bytes: int
    kept_bytes: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(
        self,
        root: Path,
        *,
        digest: DigestFn = blake3_hex,
        max_bytes: int | None = None,
        grace_s: float = 3600.0,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._digest = digest
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self._clock = clock
        self._lock = threading.Lock()  # guards the size counters and the cap check
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        self._quarantine = root / "quarantine"
        for d in (self._objects, self._tmp, self._quarantine):
            d.mkdir(parents=True, exist_ok=True)
        # Temp files are only ever left behind by a crash mid-write: they are garbage.
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        self._bytes = 0
        self._count = 0
        for path in self._iter_objects():
            with contextlib.suppress(FileNotFoundError):
                self._bytes += path.stat().st_size
                self._count += 1
        reg = registry if registry is not None else CollectorRegistry()
        self._m_bytes = Gauge("taonode_blob_bytes", "Bytes held in the blob store", registry=reg)
        self._m_count = Gauge("taonode_blob_count", "Blobs held in the blob store", registry=reg)
        self._m_cap = Gauge("taonode_blob_cap_bytes", "Blob store size cap (0: none)", registry=reg)
        self._m_written = Counter(
            "taonode_blob_written_bytes", "Bytes written to the blob store", registry=reg
        )
        self._m_collected = Counter(
            "taonode_blob_collected", "Blobs deleted by retention", registry=reg
        )
        self._m_corrupt = Counter(
            "taonode_blob_corrupt", "Blobs that failed digest verification", registry=reg
        )
        self._m_full = Counter(
            "taonode_blob_rejected_full",
            "Writes refused because pinned blobs fill the cap",
            registry=reg,
        )
        self._m_cap.set(max_bytes or 0)
        self._publish()

    def _publish(self) -> None:
        self._m_bytes.set(self._bytes)
        self._m_count.set(self._count)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def _path(self, digest: str) -> Path:
        if len(digest) < 8 or not all(c in "0123456789abcdef" for c in digest):
            raise BlobError(f"not a lowercase hex digest: {digest!r}")
        return self._objects / digest[:2] / digest

    def _iter_objects(self) -> list[Path]:
        return [p for sub in self._objects.iterdir() if sub.is_dir() for p in sub.iterdir()]

    def has(self, digest: str) -> bool:
        return self._path(digest).exists()

    def put(
        self,
        data: bytes,
        *,
        expected: str | None = None,
        pinned: Callable[[], Set[str]] | None = None,
    ) -> str:
        """Store ``data``; return its digest. Idempotent for content already present.

        ``expected`` (a digest announced by a peer) is checked before anything is written.
        ``pinned`` lets a write that would pass the cap first collect unpinned blobs.
        """
        digest = self._digest(data)
        if expected is not None and expected != digest:
            raise CorruptBlob(f"content digest {digest} differs from the expected {expected}")
        final = self._path(digest)
        if final.exists():
            return digest
        size = len(data)
        if self.max_bytes is not None and self._bytes + size > self.max_bytes:
            if pinned is not None:
                self.collect(pinned(), need_bytes=size)
            if self._bytes + size > self.max_bytes:
                self._m_full.inc()
                raise BlobStoreFull(
                    f"blob of {size} bytes does not fit: {self._bytes} of {self.max_bytes} "
                    "bytes are in use by pinned blobs"
                )
        tmp = self._tmp / f"{digest}.{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        os.close(fd)
        final.parent.mkdir(exist_ok=True)
        with self._lock:  # two writers of the same content: count it once
            if final.exists():
                tmp.unlink()
                return digest
            os.replace(tmp, final)  # atomic: readers see the whole blob or none
            self._bytes += size
            self._count += 1
            self._publish()
        _fsync_dir(final.parent)
        self._m_written.inc(size)
        return digest

    def get(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(digest) from exc
        actual = self._digest(data)
        if actual != digest:
            self._m_corrupt.inc()
            self._quarantine_file(path, len(data))
            raise CorruptBlob(f"blob {digest} is damaged on disk (reads as {actual})")
        with contextlib.suppress(OSError):
            os.utime(path)  # last access: collection deletes the least recently used first
        return data

    def _quarantine_file(self, path: Path, size: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self._quarantine / f"{path.name}.{uuid.uuid4().hex}")
            with self._lock:
                self._bytes -= size
                self._count -= 1
                self._publish()

    def delete(self, digest: str) -> bool:
        path = self._path(digest)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return False
        with self._lock:
            self._bytes -= size
            self._count -= 1
            self._publish()
        return True

    def collect(self, pinned: Set[str], *, need_bytes: int = 0) -> GcReport:
        """Delete unpinned blobs past the grace period, least recently used first.

        With ``need_bytes`` (a write waiting for room under the cap) it stops as soon as there
        is room; without, it deletes every collectable blob.
        """
        now = self._clock()
        candidates: list[tuple[float, int, Path]] = []
        for path in self._iter_objects():
            if path.name in pinned:
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime < self.grace_s:
                continue
            candidates.append((st.st_mtime, st.st_size, path))
        candidates.sort()
        deleted = freed = 0
        for _, size, path in candidates:
            if (
                need_bytes
                and self.max_bytes is not None
                and self._bytes + need_bytes <= self.max_bytes
            ):
                break
            if self.delete(path.name):
                deleted += 1
                freed += size
        self._m_collected.inc(deleted)
        return GcReport(deleted=deleted, freed_bytes=freed, kept_bytes=self._bytes)
