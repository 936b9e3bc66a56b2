"""Bounded JSON: the pre-scan's depth agrees with the decoder, limits refuse before decoding."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest

from taonode.runtime import safejson
from taonode.runtime.safejson import JsonLimitError, JsonLimits, loads, scan

LIMITS = JsonLimits(max_bytes=1 << 20, max_depth=32, max_elements=100_000)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _random_doc(rng: random.Random, level: int) -> Any:
    roll = rng.random()
    if level > 6 or roll < 0.3:
        # Strings full of the bytes the scan must not count: brackets, quotes, backslashes.
        return "".join(rng.choice('"\\[]{},ab') for _ in range(rng.randint(0, 8)))
    if roll < 0.65:
        return [_random_doc(rng, level + 1) for _ in range(rng.randint(0, 4))]
    return {_random_doc(rng, 7): _random_doc(rng, level + 1) for _ in range(rng.randint(0, 3))}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 4 << 20])
def test_scan_depth_matches_decoder_across_chunk_boundaries_succeeds(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(safejson, "_CHUNK", chunk)
    rng = random.Random(chunk)
    for _ in range(200):
        doc = _random_doc(rng, 0)
        raw = json.dumps(doc).encode()
        assert scan(raw, LIMITS)[0] == _depth(doc), raw
        assert loads(raw, LIMITS) == doc


def test_deep_document_refused_before_decoding_reverts() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(JsonLimitError, match="nested deeper than 32"):
        loads(deep, LIMITS)
    # Depth hidden behind escaped quotes is still seen.
    with pytest.raises(JsonLimitError, match="nested deeper"):
        loads('["\\\\"' + "[" * 40 + "]" * 40 + "]", LIMITS)
    # ...and brackets inside a string are not depth.
    assert loads(json.dumps(["[" * 1000]), LIMITS) == ["[" * 1000]


def test_limits_and_strictness_reverts() -> None:
    with pytest.raises(JsonLimitError, match="bytes, the limit"):
        loads(b" " * (LIMITS.max_bytes + 1), LIMITS)
    with pytest.raises(JsonLimitError, match="more than 100000 elements"):
        loads("[" + ",".join(["0"] * 100_001) + "]", LIMITS)
    for bad in ("NaN", "[Infinity]", "[-Infinity]", "[1,", "\xff", "[" + "9" * 5000 + "]"):
        with pytest.raises(JsonLimitError):
            loads(bad.encode("latin-1"), LIMITS)
    assert loads(b'{"a": [1, 2.5, "x"]}', LIMITS) == {"a": [1, 2.5, "x"]}


def test_recursion_limit_restored_after_py_ecc_import_succeeds() -> None:
    # py_ecc raises the limit to 100,000 on import; under it the C decoder crashed (exit 139).
    code = (
        "import eth_account, sys, json\n"
        "assert sys.getrecursionlimit() == 100000, sys.getrecursionlimit()\n"
        "from taonode.runtime.safejson import restore_recursion_limit\n"
        "restore_recursion_limit()\n"
        "try:\n"
        "    json.loads('[' * 100000 + ']' * 100000)\n"
        "except RecursionError:\n"
        "    print('refused')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "refused"), result.stderr
