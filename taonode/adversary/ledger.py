"""Who gained and who lost what, per job, read back from the contracts' own events.

A party's *protocol balance change* for a job is what it paid into the contracts for that job
(bonds, fees) subtracted from what the contracts credited it for that job (bonds back, the
loser's bond, voter rewards), minus stake slashed from it. Gas is left out on purpose: it is
the cost of taking part, paid by honest and dishonest parties alike, and the devnet reports
it in its own column. Every credit is attributed to the job whose transaction produced it:
all coordinator entry points but ``withdraw`` name the job, so every transaction that credits
or slashes also emits an event carrying the job id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from taonode.chain.bindings import coordinator as cb
from taonode.chain.bindings import stake_registry as sb
from taonode.chain.deploy import Contracts
from taonode.chain.watcher import BindingLogDecoder

Ledger = dict[bytes, dict[str, int]]
"""job id → checksum address → protocol balance change in wei."""


async def read_ledger(contracts: Contracts, from_block: int, prover_bond: int, bond: int) -> Ledger:
    """Every job's protocol balance changes since ``from_block``."""
    coordinator, stakes = contracts.coordinator, contracts.stakes
    decoder = BindingLogDecoder([coordinator, stakes])
    w3 = coordinator.w3
    head = int(await w3.eth.block_number)
    raw = await w3.eth.get_logs(
        {
            "fromBlock": from_block,
            "toBlock": head,
            "address": [coordinator.address, stakes.address],
        }
    )
    events = [e for e in (decoder(dict(r)) for r in raw) if e is not None]
    return ledger_of(events, prover_bond, bond)


def ledger_of(events: Iterable[Any], prover_bond: int, challenger_bond: int) -> Ledger:
    by_tx: dict[bytes, list[Any]] = defaultdict(list)
    for event in events:
        by_tx[event.tx_hash].append(event)
    ledger: Ledger = defaultdict(lambda: defaultdict(int))
    for tx_events in by_tx.values():
        jobs = {e.job_id for e in tx_events if hasattr(e, "job_id")}
        if len(jobs) != 1:
            continue  # registration, withdrawals: no job's money moves
        (job,) = jobs
        row = ledger[job]
        for e in tx_events:
            if isinstance(e, cb.ResultCommitted):
                row[e.prover] -= prover_bond
            elif isinstance(e, cb.DisputeOpened):
                row[e.challenger] -= challenger_bond
            elif isinstance(e, cb.JobFunded):
                row[e.payer] -= e.amount
            elif isinstance(e, cb.Credited | sb.Credited):
                row[e.account] += e.amount
            elif isinstance(e, sb.Slashed):
                row[e.node] -= e.amount
    return {job: dict(row) for job, row in ledger.items()}


def net(ledger: Ledger, jobs: Iterable[bytes], address: str) -> int:
    """``address``'s protocol balance change summed over ``jobs``."""
    low = address.lower()
    return sum(
        amount for job in jobs for who, amount in ledger.get(job, {}).items() if who.lower() == low
    )
