"""Committee channel: what the voter role (and any aggregator) does with votes on the wire.

All votes travel on one long-lived topic, ``/tao/1/votes``, that a voter joins at start-up so
its mesh is warm when a leaf is reached.  Joining a dispute registers the drawn committee with
the validator, so this node relays and delivers only members' votes for it, each signed with the
member's chain key *and* carrying its EIP-712 vote signature.  Gossip drops messages under load
(notes, pitfall 4), so a cast vote is re-broadcast with backoff (a fresh envelope each time; the
EIP-712 signature is the same) until the caller stops it, e.g. once the vote is seen on chain.

A round is keyed by the dispute id ``taonode.protocol.votes.dispute_id(job_id, attempt)``, which
is also what every vote signs: a result may be disputed more than once, and a vote (or a
committee registration) of one attempt never counts in another.

Usage::

    channel = CommitteeChannel(node)
    await channel.start()                      # at node start-up (voter role)
    async with channel.join(dispute_id, members) as rnd:
        await rnd.cast(Verdict.WITHIN_TOLERANCE)
        result = await rnd.collect(quorum=len(members) // 2 + 1, timeout_s=30)
        submit(result.signatures())           # aggregated on-chain submission
    ...                                       # leaving the block stops the re-broadcast
    await channel.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from eth_utils.address import to_checksum_address

from taonode.p2p.envelope import TopicKinds, VoteMessage, sign_vote_with
from taonode.p2p.node import P2PNode, Received, Subscription
from taonode.protocol.votes import Verdict


@dataclass(frozen=True)
class CollectedVote:
    voter: str
    verdict: Verdict
    signature: bytes  # EIP-712 ``Vote(bytes32 disputeId,uint8 verdict)``, as the contract wants


@dataclass
class VoteResult:
    dispute_id: bytes
    votes: dict[str, CollectedVote]
    quorum_reached: bool
    elapsed_s: float

    def tally(self) -> Counter[Verdict]:
        return Counter(v.verdict for v in self.votes.values())

    def signatures(self) -> list[CollectedVote]:
        """Votes ordered by voter address (a deterministic order for the submission)."""
        return [self.votes[k] for k in sorted(self.votes, key=str.lower)]


@dataclass
class _State:
    votes: dict[str, CollectedVote] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class CommitteeRound:
    """One dispute's vote channel; use via :meth:`CommitteeChannel.join`."""

    def __init__(
        self, channel: CommitteeChannel, dispute_id: bytes, members: Iterable[str]
    ) -> None:
        if len(dispute_id) != 32:
            raise ValueError("dispute id must be 32 bytes")
        self.channel = channel
        self.node = channel.node
        self.dispute_id = dispute_id
        self.members = frozenset(to_checksum_address(m) for m in members)
        self.topic = TopicKinds.VOTES
        self._state = _State()
        self._rebroadcast: asyncio.Task[None] | None = None
        self._joined_at = 0.0

    async def __aenter__(self) -> CommitteeRound:
        self._joined_at = time.perf_counter()
        self.node.set_committee(self.dispute_id, self.members)
        self.channel._attach(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_rebroadcast()
        self.channel._detach(self)
        self.node.drop_committee(self.dispute_id)

    @property
    def votes(self) -> dict[str, CollectedVote]:
        return dict(self._state.votes)

    def _add(self, vote: CollectedVote) -> None:
        if vote.voter in self._state.votes:
            return  # re-broadcasts of a vote we already hold
        self._state.votes[vote.voter] = vote
        self._state.changed.set()

    def _on_vote(self, item: Received[VoteMessage]) -> None:
        body = item.body
        # The validator already checked membership and that the EIP-712 signer is the sender.
        if body.dispute_id == self.dispute_id and item.sender in self.members:
            self._add(CollectedVote(item.sender, Verdict(body.verdict), body.vote_signature))

    async def cast(
        self,
        verdict: Verdict,
        *,
        rebroadcast_initial_s: float = 1.0,
        rebroadcast_max_s: float = 8.0,
    ) -> CollectedVote:
        """Sign and gossip our vote, then keep re-broadcasting it with backoff until stopped.

        The first re-broadcast waits a full heartbeat: every copy costs each node on the mesh
        ~0.5 ms of Python per duplicate, and on 2 cores 21 voters re-sending at 0.2 s built a
        backlog that delayed the next round by seconds (measured).
        """
        node = self.node
        me = node.signer.address
        if me not in self.members:
            raise ValueError(f"{me} is not on the committee of {self.dispute_id.hex()}")
        domain = node.config.vote_domain
        if domain is None:
            raise ValueError("P2PConfig.vote_domain is not set")
        sig = sign_vote_with(node.signer, domain, self.dispute_id, verdict)
        vote = CollectedVote(me, verdict, sig)
        self._add(vote)
        msg = VoteMessage(self.dispute_id, int(verdict), sig)
        await node.publish(self.topic, msg)
        self.stop_rebroadcast()
        self._rebroadcast = asyncio.create_task(
            self._repeat(msg, rebroadcast_initial_s, rebroadcast_max_s), name="vote-rebroadcast"
        )
        return vote

    async def _repeat(self, msg: VoteMessage, initial: float, cap: float) -> None:
        delay = initial
        while True:
            await asyncio.sleep(delay * (0.75 + random.random() / 2))  # noqa: S311
            with contextlib.suppress(Exception):  # a failed publish is retried next round
                await self.node.publish(self.topic, msg)
            delay = min(delay * 2, cap)

    def stop_rebroadcast(self) -> None:
        if self._rebroadcast is not None:
            self._rebroadcast.cancel()
            self._rebroadcast = None

    async def collect(self, quorum: int, timeout_s: float, *, agreeing: bool = False) -> VoteResult:
        """Wait until ``quorum`` members voted (or, with ``agreeing``, voted the same way).

        Returns what is there at the deadline otherwise, with ``quorum_reached=False``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def reached() -> bool:
            votes = self._state.votes
            if agreeing:
                counts = Counter(v.verdict for v in votes.values())
                return bool(counts) and max(counts.values()) >= quorum
            return len(votes) >= quorum

        while not reached():
            left = deadline - loop.time()
            if left <= 0:
                break
            self._state.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state.changed.wait(), left)
        ok = reached()
        elapsed = time.perf_counter() - self._joined_at
        if ok:
            self.node.metrics.vote_seconds.observe(elapsed)
        return VoteResult(self.dispute_id, dict(self._state.votes), ok, elapsed)


class CommitteeChannel:
    """The node's vote channel: one subscription, dispatched to the rounds by dispute id."""

    def __init__(self, node: P2PNode, *, early_votes: int = 4096) -> None:
        self.node = node
        self._rounds: dict[bytes, CommitteeRound] = {}
        # Votes for disputes we have not joined yet (other members reached the leaf first);
        # replayed into the round on join.  Bounded; re-broadcasts cover anything evicted.
        self._early: deque[Received[VoteMessage]] = deque(maxlen=early_votes)
        self._sub: Subscription[VoteMessage] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self.node.subscribe(TopicKinds.VOTES, VoteMessage)
        self._reader = asyncio.create_task(self._read(self._sub), name="committee-reader")

    async def stop(self) -> None:
        for rnd in list(self._rounds.values()):
            await rnd.__aexit__(None, None, None)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    async def __aenter__(self) -> CommitteeChannel:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def join(self, dispute_id: bytes, members: Iterable[str]) -> CommitteeRound:
        if self._sub is None:
            raise RuntimeError("CommitteeChannel.start() first")
        return CommitteeRound(self, dispute_id, members)

    def _attach(self, rnd: CommitteeRound) -> None:
        self._rounds[rnd.dispute_id] = rnd
        for item in [i for i in self._early if i.body.dispute_id == rnd.dispute_id]:
            rnd._on_vote(item)

    def _detach(self, rnd: CommitteeRound) -> None:
        if self._rounds.get(rnd.dispute_id) is rnd:
            del self._rounds[rnd.dispute_id]

    async def _read(self, sub: Subscription[VoteMessage]) -> None:
        async for item in sub:
            rnd = self._rounds.get(item.body.dispute_id)
            if rnd is not None:
                rnd._on_vote(item)
            else:
                self._early.append(item)
