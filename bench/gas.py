"""Gas used by every TAO contract operation, and by a full dispute (N = 1024, k = 8, m = 7).

    PYTHONPATH=. python -m bench.gas [--backend embedded|anvil] [--ops 1024] [--k 8]

Prints a table and writes ``bench/results/gas.json``. Gas is deterministic for given inputs; the
committee draw depends on block hashes, so its gas varies slightly with the seed (rejected
repeats cost extra samples). Targets (issue 5): commitResult <= 100k, full dispute <= 2M.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3.types import TxReceipt

from taonode.chain.anvil import AnvilChain
from taonode.chain.deploy import Contracts, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import LocalChain
from taonode.chain.states import Phase
from taonode.chain.tx import DirectTransactor
from taonode.protocol import schedule
from taonode.protocol.votes import Verdict, VoteDomain, dispute_id, sign_vote
from taonode.runtime.merkle import merkle_proof, merkle_root
from taonode.signer import LocalSigner

RESULTS = Path(__file__).resolve().parent / "results"
ETHER = 10**18
TARGET_COMMIT = 100_000
TARGET_DISPUTE = 2_000_000
DEPLOYER, PROVER, CHALLENGER, CLIENT, FIRST_VOTER = 0, 1, 2, 3, 4
NUM_VOTERS = 12


def h(x: object) -> bytes:
    return keccak(str(x).encode())


def gas(receipt: TxReceipt) -> int:
    return int(receipt["gasUsed"])


@dataclass
class Row:
    op: str
    gas: int
    note: str = ""


async def run_dispute(chain: LocalChain, num_ops: int, k: int, m: int) -> list[Row]:
    """Deploy with committee size ``m``, play one full dispute, return the gas of each step."""
    quorum = m // 2 + 1
    params = replace(DeployParams(), k=k, committeeSize=m, quorum=quorum, maxNodes=1024)
    signers = [LocalSigner(key) for key in chain.keys]
    txs = [DirectTransactor(chain.w3, s) for s in signers]
    deployment = await deploy(chain.w3, txs[DEPLOYER], params)
    base = Contracts.connect(chain.w3, deployment)
    c = [base.as_(t) for t in txs]
    rows: list[Row] = []

    reg = []
    for i in range(NUM_VOTERS):
        who = FIRST_VOTER + i
        r = await c[who].stakes.register(
            b"\x00\x24" + h(who), [f"/ip4/10.0.0.{who}/tcp/4001"], value=(1 + i % 3) * ETHER
        )
        reg.append(gas(r))
    rows.append(Row("register", max(reg), f"max of {NUM_VOTERS} (mean {sum(reg) // len(reg)})"))
    rows.append(Row("topUp", gas(await c[FIRST_VOTER].stakes.top_up(value=ETHER))))
    rows.append(
        Row(
            "registerModel",
            gas(await c[CLIENT].models.register_model(h("m"), h("p"), num_ops, "ipfs://m")),
        )
    )

    digests = [h(f"frontier:{i}") for i in range(num_ops + 1)]
    cheat = num_ops - 1
    claimed = digests[: cheat + 1] + [h(f"bad:{i}") for i in range(cheat + 1, num_ops + 1)]
    root = merkle_root(claimed)
    bond = params.proverBond
    r = await c[PROVER].coordinator.commit_result(
        h("job0"), h("m"), h("p"), claimed[0], claimed[-1], root, value=bond
    )
    rows.append(Row("commitResult", gas(r), f"target <= {TARGET_COMMIT:,}"))
    r = await c[PROVER].coordinator.commit_result(
        h("job1"), h("m"), h("p"), claimed[0], claimed[-1], root, value=bond
    )
    rows.append(Row("commitResult (2nd)", gas(r), "warm totals"))
    rows.append(
        Row("fundJob", gas(await c[CLIENT].coordinator.fund_job(h("job1"), value=ETHER // 100)))
    )
    await chain.mine(params.challengeWindow + 1)
    rows.append(Row("finalize", gas(await c[CLIENT].coordinator.finalize(h("job1")))))

    job = h("job0")
    co_p, co_c = c[PROVER].coordinator, c[CHALLENGER].coordinator
    # the dispute is opened inside the window of a fresh commitment
    r = await c[PROVER].coordinator.commit_result(
        h("job2"), h("m"), h("p"), claimed[0], claimed[-1], root, value=bond
    )
    job = h("job2")
    dispute: list[int] = []
    r = await co_c.challenge(job, value=params.challengerBond)
    rows.append(Row("challenge", gas(r)))
    dispute.append(gas(r))
    rnd = 0
    while True:
        cuts = await co_p.expected_cuts(job)
        proofs = [p for cut in cuts for p in merkle_proof(claimed, cut)]
        r = await co_p.prover_move(job, [claimed[cut] for cut in cuts], proofs)
        rows.append(Row(f"proverMove r{rnd}", gas(r), f"{len(cuts)} digests"))
        dispute.append(gas(r))
        d = await co_p.dispute_of(job)
        if d.phase != Phase.CHALLENGER_MOVE:
            break
        bounds = [d.a, *schedule.cuts(d.a, d.b, k), d.b]
        j = next(i for i in range(len(bounds) - 1) if bounds[i] <= cheat < bounds[i + 1])
        interior = [claimed[cut] for cut in schedule.cuts(d.a, d.b, k)]
        r = await co_c.challenger_move(job, j, interior)
        rows.append(Row(f"challengerMove r{rnd}", gas(r)))
        dispute.append(gas(r))
        rnd += 1
        if (await co_p.dispute_of(job)).phase != Phase.PROVER_MOVE:
            break
    await chain.mine(2)
    r = await c[CLIENT].coordinator.draw_committee(job)
    rows.append(Row(f"drawCommittee m={m}", gas(r)))
    dispute.append(gas(r))
    members = await base.coordinator.committee_of(job)
    domain = VoteDomain(deployment.chain_id, deployment.coordinator)
    index = {s.address: i for i, s in enumerate(signers)}
    sigs = [
        sign_vote(chain.keys[index[a]], domain, dispute_id(job, 1), Verdict.THEORETICAL_VIOLATION)
        for a in members
    ]
    r = await c[CLIENT].coordinator.submit_votes(
        job, list(range(len(sigs))), [int(Verdict.THEORETICAL_VIOLATION)] * len(sigs), sigs
    )
    rows.append(Row(f"submitVotes m={m}", gas(r), f"{len(sigs)} signatures"))
    dispute.append(gas(r))
    r = await c[CLIENT].coordinator.resolve(job)
    rows.append(Row(f"resolve m={m}", gas(r), "prover slashed, majority paid"))
    dispute.append(gas(r))
    rows.append(
        Row(
            f"full dispute N={num_ops} k={k} m={m}",
            sum(dispute),
            f"challenge..resolve, {rnd} rounds; target <= {TARGET_DISPUTE:,}",
        )
    )
    rows.extend(await reopen_rows(c, base, chain, params, claimed, root, domain, index, m))
    rows.append(Row("withdraw (coordinator)", gas(await c[CHALLENGER].coordinator.withdraw())))
    rows.append(Row("unbond", gas(await c[FIRST_VOTER + 1].stakes.unbond(ETHER))))
    await chain.mine(params.unbondDelay)
    rows.append(Row("withdraw (stake)", gas(await c[FIRST_VOTER + 1].stakes.withdraw())))
    return rows


async def reopen_rows(
    c: list[Contracts],
    base: Contracts,
    chain: LocalChain,
    params: DeployParams,
    claimed: list[bytes],
    root: bytes,
    domain: VoteDomain,
    index: dict[ChecksumAddress, int],
    m: int,
) -> list[Row]:
    """A challenge the committee decides for the prover (the result re-opens), then a second
    challenge of the same result (it clears the first dispute's committee and ballots)."""
    job = h("job3")
    co_p, co_c = c[PROVER].coordinator, c[CHALLENGER].coordinator
    await co_p.commit_result(
        job, h("m"), h("p"), claimed[0], claimed[-1], root, value=params.proverBond
    )
    await co_c.challenge(job, value=params.challengerBond)
    while True:
        cuts = await co_p.expected_cuts(job)
        proofs = [p for cut in cuts for p in merkle_proof(claimed, cut)]
        await co_p.prover_move(job, [claimed[cut] for cut in cuts], proofs)
        d = await co_p.dispute_of(job)
        if d.phase != Phase.CHALLENGER_MOVE:
            break
        interior = [claimed[cut] for cut in schedule.cuts(d.a, d.b, params.k)]
        await co_c.challenger_move(job, 0, interior)  # towards op 0, which is honest
        if (await co_p.dispute_of(job)).phase != Phase.PROVER_MOVE:
            break
    await chain.mine(2)
    await c[CLIENT].coordinator.draw_committee(job)
    members = await base.coordinator.committee_of(job)
    v = Verdict.WITHIN_TOLERANCE
    sigs = [sign_vote(chain.keys[index[a]], domain, dispute_id(job, 1), v) for a in members]
    await c[CLIENT].coordinator.submit_votes(
        job, list(range(len(sigs))), [int(v)] * len(sigs), sigs
    )
    resolved = await c[CLIENT].coordinator.resolve(job)
    again = await c[CLIENT].coordinator.challenge(job, value=params.challengerBond)
    return [
        Row(f"resolve m={m} (prover won)", gas(resolved), "re-opens; majority + treasury paid"),
        Row(f"challenge (attempt 2, m={m})", gas(again), "clears attempt 1's committee"),
    ]


async def open_chain(backend: str) -> LocalChain:
    if backend == "anvil":
        return await AnvilChain.start(num_keys=FIRST_VOTER + NUM_VOTERS)
    return EmbeddedChain(num_keys=FIRST_VOTER + NUM_VOTERS)


async def run(backend: str, num_ops: int, k: int, sizes: list[int]) -> dict[str, Any]:
    tables: dict[str, list[Row]] = {}
    for m in sizes:
        chain = await open_chain(backend)
        try:
            tables[str(m)] = await run_dispute(chain, num_ops, k, m)
        finally:
            await chain.close()
    return {
        "backend": backend,
        "num_ops": num_ops,
        "k": k,
        "python": platform.python_version(),
        "committees": {m: [r.__dict__ for r in rows] for m, rows in tables.items()},
    }


def table(result: dict[str, Any], main_m: str) -> str:
    rows = result["committees"][main_m]
    seen = {r["op"] for r in rows}
    extra = []
    for m, other in result["committees"].items():
        if m == main_m:
            continue
        extra += [r for r in other if r["op"] not in seen and not r["op"].startswith("full")]
        extra += [r for r in other if r["op"].startswith("full")]
    lines = ["| operation | gas | note |", "|---|---:|---|"]
    for r in rows + extra:
        lines.append(f"| {r['op']} | {r['gas']:,} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.gas", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("embedded", "anvil"), default="embedded")
    ap.add_argument("--ops", type=int, default=1024, help="N, ops in the disputed trace")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--committees", default="7,5,9", help="committee sizes; first = headline")
    ap.add_argument("--out", type=Path, default=RESULTS / "gas.json")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.committees.split(",")]
    result = asyncio.run(run(args.backend, args.ops, args.k, sizes))
    print(f"gas on {args.backend}, N={args.ops}, k={args.k}")
    print(table(result, str(sizes[0])))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    commit = next(r for r in result["committees"][str(sizes[0])] if r["op"] == "commitResult")
    full = next(r for r in result["committees"][str(sizes[0])] if r["op"].startswith("full"))
    ok = commit["gas"] <= TARGET_COMMIT and full["gas"] <= TARGET_DISPUTE
    print(
        f"targets: commitResult {commit['gas']:,} / {TARGET_COMMIT:,}, "
        f"full dispute {full['gas']:,} / {TARGET_DISPUTE:,}: {'met' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
