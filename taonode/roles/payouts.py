"""Pulls the node's payouts: returned bonds, fees, rewards (coordinator) and credits from
slashing or unbonding (stake registry) are credited on chain and withdrawn from here."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from taonode.roles.context import RoleContext
from taonode.roles.driver import Settled

log = structlog.get_logger("taonode.payouts")


class PayoutCollector:
    name = "payouts"

    def __init__(self, ctx: RoleContext, interval_s: float = 5.0) -> None:
        self.ctx = ctx
        self.interval_s = interval_s
        self.withdrawn = 0
        self._rounds = 0

    async def start(self) -> None:
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            # A failed withdrawal (RPC down, a race) is simply tried again next interval.
            with contextlib.suppress(Exception):
                await self.collect()

    async def collect(self) -> int:
        """Withdraws whatever is credited; returns the wei withdrawn now."""
        me = self.ctx.me
        coordinator, stakes = self.ctx.contracts.coordinator, self.ctx.contracts.stakes
        total = 0
        for label, amount, tx in (
            ("coordinator", await coordinator.pending(me), coordinator.withdraw_tx()),
            ("stakes", await stakes.credits(me), stakes.withdraw_tx()),
        ):
            if amount <= 0:
                continue
            self._rounds += 1
            head = int(await coordinator.w3.eth.block_number)
            try:
                await self.ctx.sender.submit(f"withdraw:{label}:{head}:{self._rounds}", tx)
            except Settled as exc:
                log.info("withdrawal not needed", source=label, reason=str(exc))
                continue
            total += amount
            log.info("payout withdrawn", source=label, wei=amount)
        self.withdrawn += total
        return total

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True
