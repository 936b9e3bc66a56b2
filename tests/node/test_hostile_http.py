"""Hostile HTTP against a running daemon subprocess: it answers 4xx and stays up."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.node.daemon import Daemon, write_config

pytestmark = pytest.mark.slow


def _request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def prover_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    tmp = tmp_path_factory.mktemp("hostile")
    # A prover on its embedded chain without models still parses every /v1/infer body.
    with Daemon(write_config(tmp, tmp / "data"), "--role", "prover") as node:
        port = node.wait_port(timeout=120)
        yield node, port


def _healthy(node: Daemon, port: int) -> None:
    assert node.proc.poll() is None, node.lines[-20:]
    assert _request(port, "GET", "/healthz")[0::2] == (200, {"status": "ok"})


def test_deep_json_body_answered_400_daemon_stays_up_reverts(
    prover_port: tuple[Daemon, int],
) -> None:
    node, port = prover_port
    deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB; segfaulted the node before
    status, _, reply = _request(
        port, "POST", "/v1/infer", deep, {"Content-Type": "application/json"}
    )
    assert (status, reply["error"]) == (400, "body is not JSON"), reply
    assert "nested deeper" in reply["detail"]
    nested = b'{"model_id": "0x' + b"0" * 64 + b'", "inputs": {"x": ' + deep + b"}}"
    status, _, reply = _request(
        port, "POST", "/v1/infer", nested, {"Content-Type": "application/json"}
    )
    assert status == 400, reply
    _healthy(node, port)


def _infer(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, Any]:
    status, _, reply = _request(port, "POST", "/v1/infer", body, {"Content-Type": content_type})
    return status, reply


MODEL = "0x" + "11" * 32


@pytest.mark.parametrize(
    ("label", "body", "content_type", "status", "error"),
    [
        (
            "dtype is a list",
            {"model_id": MODEL, "inputs": {"x": {"dtype": ["int64"], "shape": [1], "data": [1]}}},
            "application/json",
            400,
            "bad tensors",
        ),
        (
            "dimension past 2**64",
            {"model_id": MODEL, "inputs": {"x": {"shape": [0, 18446744073709551616], "data": []}}},
            "application/json",
            400,
            "bad tensors",
        ),
        (
            "1e39 in a float32 tensor",
            {"model_id": MODEL, "inputs": {"x": {"shape": [1], "data": [1e39]}}},
            "application/json",
            400,
            "bad tensors",
        ),
        (
            "int past int64",
            {"model_id": MODEL, "inputs": {"x": {"dtype": "int64", "shape": [1], "data": [2**70]}}},
            "application/json",
            400,
            "bad tensors",
        ),
        (
            "model id is a number",
            {"model_id": 5, "inputs": {"x": {"shape": [1], "data": [1]}}},
            "application/json",
            400,
            "id must be 32 bytes of hex",
        ),
        (
            "model id without 0x",
            {"model_id": "11" * 32, "inputs": {"x": {"shape": [1], "data": [1]}}},
            "application/json",
            400,
            "id must be 32 bytes of hex",
        ),
        (
            "unknown top-level field",
            {"model_id": MODEL, "inputs": {"x": {"shape": [1], "data": [1]}}, "extra": 1},
            "application/json",
            400,
            "unknown fields",
        ),
        ("NaN literal", b'{"model_id": "x", "inputs": [NaN]}', "application/json", 400, None),
        (
            "1e400 overflows a double",
            b'{"model_id": "0x'
            + b"1" * 64
            + b'", "inputs": {"x": {"shape": [1], "data": [1e400]}}}',
            "application/json",
            400,
            "bad tensors",
        ),
        ("not UTF-8", b'{"model_id": "\xff"}', "application/json", 400, "body is not JSON"),
        ("unknown charset", {}, "application/json; charset=nonexistent", 415, None),
        ("latin-1 charset", {}, "application/json; charset=latin-1", 415, None),
        ("text/plain", b"hello", "text/plain", 415, "unsupported media type"),
        ("safetensors garbage", b"\x00" * 16, "application/octet-stream", 400, "bad tensors"),
    ],
)
def test_malformed_fields_answer_4xx_never_500_reverts(
    prover_port: tuple[Daemon, int],
    label: str,
    body: Any,
    content_type: str,
    status: int,
    error: str | None,
) -> None:
    node, port = prover_port
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, reply = _infer(port, raw, content_type)
    assert got == status, (label, reply)
    if error is not None:
        assert reply["error"] == error, (label, reply)
    _healthy(node, port)


def test_status_headers_405_allow_413_reverts(prover_port: tuple[Daemon, int]) -> None:
    node, port = prover_port
    status, headers, reply = _request(port, "GET", "/v1/infer")
    assert status == 405, reply
    assert "POST" in headers["Allow"]
    status, headers, reply = _request(port, "DELETE", "/healthz")
    assert status == 405
    assert "GET" in headers["Allow"]
    # Over the JSON limit: refused from the declared length, before the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(17 << 20))
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read())["error"] == "request too large"
    finally:
        conn.close()
    _healthy(node, port)


def test_openapi_ids_have_the_server_pattern_succeeds(prover_port: tuple[Daemon, int]) -> None:
    _, port = prover_port
    _, _, doc = _request(port, "GET", "/openapi.json")
    infer = doc["paths"]["/v1/infer"]["post"]
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model_id"]["pattern"] == "^0x[0-9a-fA-F]{64}$"
    job = doc["paths"]["/v1/jobs/{job_id}"]["get"]
    assert job["parameters"][0]["schema"]["pattern"] == "^0x[0-9a-fA-F]{64}$"
    tensor = schema["properties"]["inputs"]["additionalProperties"]
    assert tensor["additionalProperties"] is False
    assert set(tensor["required"]) == {"shape", "data"}
