"""Driving :mod:`taonode.p2p.peerproc` peers in separate OS processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]


class PeerProc:
    """One peer process; ``cmd`` sends a command and awaits its answer."""

    def __init__(self, proc: asyncio.subprocess.Process, key_file: Path, port: int) -> None:
        self.proc = proc
        self.key_file = key_file
        self.port = port
        self.peer_id = ""
        self.addr = ""
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[Json]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls, key_file: Path, *, port: int = 0, bootstrap: tuple[str, ...] = ()
    ) -> PeerProc:
        args = ["-m", "taonode.p2p.peerproc", "--key-file", str(key_file), "--port", str(port)]
        for b in bootstrap:
            args += ["--bootstrap", b]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # Each process logs next to its key file (read it when a test fails).
        with open(key_file.with_suffix(".log"), "ab") as log:  # noqa: ASYNC230 (instant)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self = cls(proc, key_file, port)
        ready: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiting["ready"] = ready
        self._reader = asyncio.create_task(self._read())
        info = await asyncio.wait_for(ready, 30)
        self.peer_id = info["peer_id"]
        self.addr = info["addrs"][0]
        self.port = int(self.addr.split("/tcp/")[1].split("/")[0])
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            if not line.startswith(b"@@"):
                continue
            msg = json.loads(line[2:])
            fut = self._waiting.pop(str(msg.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("peer process exited"))

    async def cmd(self, op: str, timeout_s: float = 30, **kw: Any) -> Json:
        cid = str(next(self._ids))
        fut: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": cid, **kw}).encode() + b"\n")
        await self.proc.stdin.drain()
        out = await asyncio.wait_for(fut, timeout_s)
        if "exception" in out:
            raise RuntimeError(f"{op}: {out['exception']}")
        return out

    async def terminate(self, timeout_s: float = 10) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after the timeout)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader


async def wait_until(pred: Any, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll the async predicate until true; raises TimeoutError with the last state."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        if await pred():
            return
        if loop.time() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval_s)
