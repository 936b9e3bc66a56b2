"""Test chains for the chain adapters: the fixture contract, anvil, and eth-tester over HTTP.

The TAO contracts and the project's own chain launchers (``taonode.chain.embedded``/``anvil``)
land on other branches; these helpers are deliberately small and test-only.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.providers.eth_tester import EthereumTesterProvider

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_SOL = Path(__file__).parent / "fixtures" / "Fixture.sol"
SOLC = ROOT / "contracts" / "node_modules" / "solc" / "solc.js"
ANVIL = ROOT / "contracts" / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


@dataclass(frozen=True)
class Artifact:
    abi: list[dict[str, Any]]
    bytecode: str


def compile_fixture() -> Artifact:
    source = {"content": FIXTURE_SOL.read_text()}
    request = {
        "language": "Solidity",
        "sources": {"Fixture.sol": source},
        "settings": {
            "optimizer": {"enabled": True, "runs": 200},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }
    out = subprocess.run(
        ["node", str(SOLC), "--standard-json"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    # solc-js prints a note about SMT solvers before the JSON.
    result = json.loads(out[out.index("{") :])
    errors = [e for e in result.get("errors", []) if e["severity"] == "error"]
    if errors:
        raise RuntimeError(errors)
    contract = result["contracts"]["Fixture.sol"]["Fixture"]
    return Artifact(contract["abi"], contract["evm"]["bytecode"]["object"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_rpc(url: str, timeout: float = 20.0) -> None:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 2}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            w3.eth.block_number  # noqa: B018
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Anvil:
    """An anvil process on a free loopback port; ``stop``/``start`` keep its state (``--state``)."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = state_dir / "anvil-state.json"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        cmd += ["--state", str(self.state), "--preserve-historical-states", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_rpc(self.url)

    def stop(self) -> None:
        if self.proc is None:
            return
        # SIGINT lets anvil dump its state so a restart continues the same chain.
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _revert_payload(exc: BaseException) -> str | None:
    # eth-tester keeps revert data only in its message; a real node returns it as error.data.
    message = str(exc.args[0]) if exc.args else str(exc)
    _, sep, rest = message.partition("execution reverted: ")
    if not sep:
        return None
    if rest[:2] in ("b'", 'b"'):
        value = ast.literal_eval(rest)
        return "0x" + bytes(value).hex()
    return "0x08c379a0" + encode(["string"], [rest]).hex()


class EthTesterRPC:
    """eth-tester behind a loopback JSON-RPC endpoint, so a child process can reach the chain."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        lock = threading.Lock()
        w3 = self.w3

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                body: dict[str, Any] = {"jsonrpc": "2.0", "id": req["id"]}
                try:
                    with lock:
                        res = w3.manager.request_blocking(req["method"], req["params"])
                    body["result"] = json.loads(Web3.to_json(res))
                except (TransactionFailed, ContractLogicError) as exc:
                    err: dict[str, Any] = {"code": 3, "message": "execution reverted"}
                    payload = getattr(exc, "data", None)
                    if not (isinstance(payload, str) and payload.startswith("0x")):
                        payload = _revert_payload(exc)
                    if payload:
                        err["data"] = payload
                    body["error"] = err
                except Exception as exc:
                    body["error"] = {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}
