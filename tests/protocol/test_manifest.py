from __future__ import annotations

import pytest
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from taonode.protocol.manifest import FrontierManifest, ManifestError, decode_manifest
from taonode.runtime.merkle import frontier_digest

names = st.text(min_size=1, max_size=12)


@given(st.dictionaries(names, st.binary(min_size=32, max_size=32), min_size=1, max_size=8))
def test_manifest_roundtrip_matches_frontier_digest_succeeds(entries: dict[str, bytes]) -> None:
    manifest = FrontierManifest.from_digests(entries)
    assert manifest.digest == frontier_digest(list(entries.items()))
    again = decode_manifest(manifest.encode(), manifest.digest)
    assert again == manifest
    assert again.encode() == manifest.encode()


def test_decode_manifest_wrong_digest_reverts() -> None:
    manifest = FrontierManifest.from_digests({"x": keccak(b"x")})
    with pytest.raises(ManifestError, match="does not match"):
        decode_manifest(manifest.encode(), keccak(b"other"))


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"v":2,"entries":[]}',
        b'{"v":1,"entries":[["x","zz"]]}',
        b'{"v":1,"entries":[["x","00"]]}',
        b'{"v":1,"entries":[["x"]]}',
        b'{"v":1,"entries":[["x","' + b"00" * 32 + b'"],["x","' + b"11" * 32 + b'"]]}',
    ],
)
def test_decode_manifest_malformed_reverts(data: bytes) -> None:
    with pytest.raises(ManifestError):
        decode_manifest(data)
