"""anvil (npm ``@foundry-rs/anvil``, pinned in contracts/package.json) on a free loopback port.

The npm package's ``bin`` is a Node wrapper that forks the real binary: a signal to the
wrapper's PID (SIGSTOP, SIGKILL) never reaches anvil. Wherever the project manages anvil's
lifecycle it runs the platform binary inside ``node_modules`` instead (:func:`anvil_binary`).

Deadlines are block numbers and anvil mines only on transactions unless told otherwise: a
network on an idle anvil never reaches a deadline (disputes sit in AwaitDraw forever). Pass
``block_time`` for interval mining wherever nodes run against it; tests that count blocks
exactly mine by hand (``mine``) and leave it unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from web3 import AsyncWeb3

from taonode.chain.localchain import DEV_BALANCE_WEI, dev_key
from taonode.chain.rpc import http_web3

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "contracts" / "node_modules"
DEFAULT_ANVIL = NODE_MODULES / ".bin" / "anvil"
ANVIL_CHAIN_ID = 31337


class AnvilError(RuntimeError):
    """anvil is missing or did not come up."""


def anvil_binary() -> Path:
    """The pinned anvil's real binary (``$TAONODE_ANVIL`` overrides it).

    ``@foundry-rs/anvil-<os>-<arch>/bin/anvil``, the optional dependency npm installed for this
    platform; the wrapper under ``.bin`` only if no platform package is there.
    """
    override = os.environ.get("TAONODE_ANVIL")
    if override:
        return Path(override)
    for candidate in sorted(NODE_MODULES.glob("@foundry-rs/anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return candidate
    return DEFAULT_ANVIL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AnvilChain:
    """A running anvil process; use :meth:`start` (or ``async with await AnvilChain.start()``)."""

    name = "anvil"

    def __init__(self, proc: asyncio.subprocess.Process, port: int, keys: list[bytes]) -> None:
        self._proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._keys = keys
        self._w3 = http_web3(self.url, timeout_s=30.0)

    @classmethod
    async def start(
        cls,
        num_keys: int = 20,
        *,
        binary: Path | None = None,
        ready_timeout: float = 30.0,
        block_time: float | None = None,
    ) -> AnvilChain:
        """``block_time``: mine a block every so many seconds (interval mining), besides one
        per transaction; None mines only on transactions and :meth:`mine`."""
        exe = binary or anvil_binary()
        if not exe.exists():
            raise AnvilError(f"anvil not found at {exe}: run `npm ci` in contracts/")
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken between probing and binding
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                *[
                    str(exe),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--chain-id",
                    str(ANVIL_CHAIN_ID),
                    "--accounts",
                    "0",
                    "--silent",
                    *(["--block-time", f"{block_time:g}"] if block_time is not None else []),
                ],
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            chain = cls(proc, port, [dev_key(i) for i in range(num_keys)])
            try:
                await chain._wait_ready(ready_timeout)
            except AnvilError as e:
                last = e
                await chain.close()
                continue
            for key in chain._keys:
                address = Account.from_key(key).address
                await chain._w3.provider.make_request(
                    "anvil_setBalance",
                    [address, hex(DEV_BALANCE_WEI)],
                )
            return chain
        raise AnvilError(f"anvil did not start: {last}")

    async def _wait_ready(self, ready_timeout: float) -> None:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                err = (
                    (await self._proc.stderr.read()).decode(errors="replace")
                    if self._proc.stderr
                    else ""
                )
                raise AnvilError(f"anvil exited with {self._proc.returncode}: {err.strip()}")
            with contextlib.suppress(Exception):
                await self._w3.eth.chain_id
                return
            await asyncio.sleep(0.05)
        raise AnvilError(f"anvil not ready on port {self.port} after {ready_timeout}s")

    @property
    def pid(self) -> int:
        """The anvil process (tests pause it with SIGSTOP to take the RPC away)."""
        return self._proc.pid

    @property
    def w3(self) -> AsyncWeb3[Any]:
        return self._w3

    @property
    def keys(self) -> list[bytes]:
        return list(self._keys)

    async def mine(self, blocks: int = 1) -> None:
        if blocks > 0:
            await self._w3.provider.make_request("anvil_mine", [hex(blocks)])

    async def snapshot(self) -> str:
        resp = await self._w3.provider.make_request("evm_snapshot", [])
        return str(resp["result"])

    async def revert(self, snapshot: str) -> None:
        resp = await self._w3.provider.make_request("evm_revert", [snapshot])
        if resp.get("result") is not True:
            raise AnvilError(f"evm_revert({snapshot}) failed: {resp}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._w3.provider.disconnect()
        if self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()

    async def __aenter__(self) -> AnvilChain:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
