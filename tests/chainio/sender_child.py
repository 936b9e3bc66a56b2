"""Child process for the SIGKILL tests: send one transaction, optionally dying at a fault point.

Usage: python -m tests.chainio.sender_child URL KEY_HEX DB CONTRACT ID [FAULT]
Prints the final journal record as JSON when it gets that far.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider

from taonode.chain.sender import FeePolicy, TxSender
from taonode.signer import LocalSigner
from taonode.store.state import StateStore


async def main(url: str, key_hex: str, db: str, contract: str, ident: int, fault: str) -> None:
    w3: AsyncWeb3[Any] = AsyncWeb3(AsyncHTTPProvider(url))
    store = StateStore(Path(db))

    def die(point: str) -> None:
        if point == fault:
            os.kill(os.getpid(), signal.SIGKILL)

    sender = TxSender(
        w3,
        LocalSigner(bytes.fromhex(key_hex)),
        store,
        fees=FeePolicy(max_fee_cap=10**12),
        poll_interval_s=0.05,
        fault=die,
    )
    await sender.start()
    data = keccak(text="bump(uint256)")[:4] + encode(["uint256"], [ident])
    await sender.send(f"bump:{ident}", to=contract, data=data)
    stop = asyncio.Event()
    runner = asyncio.create_task(sender.run(stop))
    record = await asyncio.wait_for(sender.wait(f"bump:{ident}"), 30)
    stop.set()
    await runner
    print(
        json.dumps(
            {"status": record.status.value, "tx_hash": record.tx_hash, "nonce": record.nonce}
        )
    )
    store.close()
    await w3.provider.disconnect()


if __name__ == "__main__":
    url, key_hex, db, contract, ident = sys.argv[1:6]
    fault = sys.argv[6] if len(sys.argv) > 6 else ""
    asyncio.run(main(url, key_hex, db, contract, int(ident), fault))
