"""Frontier manifests: the ``(name, tensor digest)`` list behind a frontier digest.

A frontier digest on chain (the input digest is frontier 0, the output digest frontier N, and
each dispute move posts cut frontiers) names a manifest; a peer serves the manifest under that
digest, and the receiver recomputes :func:`frontier_digest` before trusting it. The tensors are
then fetched one by one by their own digests. Manifests are canonical JSON, so the same
frontier always has the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from taonode.runtime import safejson
from taonode.runtime.merkle import frontier_digest

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_ENTRIES = 4096
MANIFEST_LIMITS = safejson.JsonLimits(
    max_bytes=MAX_MANIFEST_BYTES, max_depth=3, max_elements=4 * MAX_ENTRIES + 8
)
"""{"entries": [[name, digest], …], "v": 1}: three levels, three elements per entry."""


class ManifestError(ValueError):
    """Malformed manifest bytes, or a manifest that does not match its digest."""


@dataclass(frozen=True)
class FrontierManifest:
    entries: tuple[tuple[str, bytes], ...]

    @property
    def digest(self) -> bytes:
        return frontier_digest(list(self.entries))

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.entries)

    def tensor_digest(self, name: str) -> bytes:
        for entry_name, digest in self.entries:
            if entry_name == name:
                return digest
        raise KeyError(name)

    def encode(self) -> bytes:
        body = {
            "v": MANIFEST_VERSION,
            "entries": [[name, digest.hex()] for name, digest in sorted(self.entries)],
        }
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_digests(cls, digests: dict[str, bytes]) -> FrontierManifest:
        return cls(tuple(sorted(digests.items())))


def check_shape(data: bytes) -> None:
    """Cheap, non-recursive bounds check run before any JSON decoder sees peer bytes.

    Stops a stack-overflow crash: ``py_ecc`` raises the interpreter's recursion limit to 100000,
    so the C JSON decoder overflows the C stack (segfault) on a 100,000-deep blob instead of
    raising. The scan counts size, depth and elements without recursion.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError("manifest too large")
    try:
        safejson.scan(data, MANIFEST_LIMITS)
    except safejson.JsonLimitError as exc:
        raise ManifestError(f"manifest refused: {exc}") from None


def decode_manifest(data: bytes, expected_digest: bytes | None = None) -> FrontierManifest:
    """Parse manifest bytes; with ``expected_digest`` also prove they belong to it."""
    check_shape(data)
    try:
        # Bounded: a peer's bytes nested 100,000 deep must not reach the recursive decoder.
        body = safejson.loads(data, MANIFEST_LIMITS)
    except safejson.JsonLimitError:
        raise ManifestError("manifest is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != MANIFEST_VERSION:
        raise ManifestError("unknown manifest version")
    raw = body.get("entries")
    if not isinstance(raw, list) or len(raw) > MAX_ENTRIES:
        raise ManifestError("manifest entries missing or too many")
    entries: list[tuple[str, bytes]] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
        ):
            raise ManifestError("manifest entry must be [name, hex digest]")
        try:
            digest = bytes.fromhex(item[1])
        except ValueError:
            raise ManifestError("manifest digest is not hex") from None
        if len(digest) != 32:
            raise ManifestError("manifest digest must be 32 bytes")
        entries.append((item[0], digest))
    if len({name for name, _ in entries}) != len(entries):
        raise ManifestError("duplicate name in manifest")
    manifest = FrontierManifest(tuple(sorted(entries)))
    if expected_digest is not None and manifest.digest != expected_digest:
        raise ManifestError("manifest does not match its frontier digest")
    return manifest
