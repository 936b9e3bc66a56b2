"""The node's HTTP RPC client keeps working after requests are cancelled mid-flight."""

from __future__ import annotations

import asyncio
import random

import pytest

from taonode.chain.anvil import AnvilChain
from taonode.chain.rpc import http_web3


@pytest.mark.anvil
async def test_http_web3_cancelled_requests_do_not_hang_later_ones_succeeds() -> None:
    chain = await AnvilChain.start(num_keys=1)
    try:
        w3 = http_web3(chain.url)
        rng = random.Random(7)
        # Cancel bursts of requests at random points of their lifetime: with web3's own
        # session manager this leaks its process-wide lock and every later request hangs.
        for _ in range(150):
            tasks = [asyncio.create_task(w3.eth.block_number) for _ in range(8)]
            await asyncio.sleep(rng.random() * 0.002)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        head = await asyncio.wait_for(w3.eth.block_number, 10)
        assert head >= 0
        assert await asyncio.wait_for(chain.w3.eth.chain_id, 10) == 31337
    finally:
        await chain.close()
