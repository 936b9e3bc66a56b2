"""Transaction sender: one per key, owning its nonce, journaling every transaction before it leaves.

The life of a transaction (all state in the ``tx_journal`` table of :mod:`taonode.store.state`):

1. ``send(key, …)``: a key already journaled returns its record and sends nothing (idempotency:
   a role that restarts and asks again for ``commit:<job>`` gets the first transaction back).
2. Simulate with ``eth_call`` (and ``eth_estimateGas``): a revert raises
   :class:`SimulationReverted` carrying the decoded custom error; nothing is journaled or sent.
3. Under the nonce lock: take the next nonce, sign, **journal the signed bytes (fsync)**, then
   broadcast. The journal is written first, so a crash after it re-broadcasts the *same* signed
   bytes at start (same hash: a node that already has it says "already known"), and a crash
   before it leaves nothing on chain.
4. ``run()`` polls receipts of every attempt, counts confirmations, notices a reorg that un-mines
   a transaction (re-broadcasts it), replaces one stuck past ``replace_after_s`` with the same
   nonce and fees bumped by ``bump_percent`` (never above the fee cap), and marks a transaction
   whose nonce was used by something else ``dropped``.

Nonce at start: ``max(chain pending count, highest journaled nonce + 1)``: the chain knows what
was mined or pooled, the journal knows what was signed but maybe never reached the chain.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import structlog
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress, HexStr
from eth_utils.abi import abi_to_signature, get_abi_input_names, get_abi_input_types
from eth_utils.crypto import keccak
from prometheus_client import CollectorRegistry, Counter, Gauge
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxReceipt

from taonode.chain.tx import ContractRevert, TxFailed, TxRequest, decode_revert
from taonode.signer import Signer
from taonode.store.state import (
    FINAL_TX,
    PENDING_TX,
    StateStore,
    TxAttempt,
    TxRecord,
    TxStatus,
)

log = structlog.get_logger(__name__)

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")

# -- revert decoding --------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedRevert:
    name: str
    """The custom error's name, or ``Error`` (``require``), ``Panic`` or ``Unknown``."""
    args: Mapping[str, Any]
    data: bytes

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"{self.name}({inner})"


class SenderError(Exception):
    pass


class SimulationReverted(SenderError):
    """The call reverts in simulation: it was not journaled and not sent."""

    def __init__(self, key: str, revert: DecodedRevert) -> None:
        super().__init__(f"{key}: reverts with {revert}")
        self.key = key
        self.revert = revert


class ErrorDecoder:
    """Decodes revert data against the custom errors of any number of contract ABIs.

    ``decoder.error_class("NotStaked")`` is a :class:`SimulationReverted` subclass that the
    sender raises for that error, so callers can ``except decoder.error_class("NotStaked")``.
    """

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        self._classes: dict[str, type[SimulationReverted]] = {}
        for abi in abis:
            for item in abi:
                if item.get("type") != "error":
                    continue
                element = cast(Any, item)
                selector = keccak(text=abi_to_signature(element))[:4]
                names = [n or f"arg{i}" for i, n in enumerate(get_abi_input_names(element))]
                self._errors[selector] = (item["name"], get_abi_input_types(element), names)

    def error_class(self, name: str) -> type[SimulationReverted]:
        if name not in self._classes:
            self._classes[name] = type(name, (SimulationReverted,), {})
        return self._classes[name]

    def decode(self, data: bytes) -> DecodedRevert:
        selector, body = data[:4], data[4:]
        try:
            if selector == ERROR_STRING_SELECTOR:
                return DecodedRevert("Error", {"message": abi_decode(["string"], body)[0]}, data)
            if selector == PANIC_SELECTOR:
                return DecodedRevert("Panic", {"code": abi_decode(["uint256"], body)[0]}, data)
            if selector in self._errors:
                name, types, names = self._errors[selector]
                values = abi_decode(types, body)
                return DecodedRevert(name, dict(zip(names, values, strict=True)), data)
        except Exception:  # malformed revert data: report it raw rather than crash
            log.warning("revert_undecodable", data=data.hex())
        return DecodedRevert("Unknown", {}, data)

    def exception(self, key: str, data: bytes) -> SimulationReverted:
        revert = self.decode(data)
        if revert.name in ("Error", "Panic", "Unknown"):
            return SimulationReverted(key, revert)
        return self.error_class(revert.name)(key, revert)


_HEX_RE = re.compile(r"0x[0-9a-fA-F]{8,}")


def revert_data(exc: BaseException) -> bytes | None:
    """Raw revert data from whatever the backend raised, or None if it is not a revert.

    JSON-RPC nodes (anvil, geth) return it as ``error.data``, which web3 puts on
    ``ContractLogicError.data``. The in-process eth-tester only keeps it in the message, as a
    Python bytes literal (custom errors) or the decoded ``Error(string)`` reason.
    """
    if not isinstance(exc, ContractLogicError | TransactionFailed):
        return None
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return bytes.fromhex(data[2:])
    message = str(exc.args[0]) if exc.args else str(exc)
    _, sep, rest = message.partition("execution reverted: ")
    if sep:
        if rest[:2] in ("b'", 'b"'):
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(rest)
                if isinstance(value, bytes):
                    return value
        elif rest:
            return ERROR_STRING_SELECTOR + abi_encode(["string"], [rest])
    found = _HEX_RE.search(message)
    if found:
        return bytes.fromhex(found.group(0)[2:])
    return b""


# -- fees and metrics --------------------------------------------------------------------------


@dataclass(frozen=True)
class FeePolicy:
    max_fee_cap: int
    """Never offer more than this per gas (wei), replacements included."""
    max_priority_fee: int = 2 * 10**9
    """Upper bound on the tip (wei per gas); the node's suggestion is used below it."""
    base_fee_multiplier: int = 2
    """maxFeePerGas = multiplier × current base fee + tip: room for base-fee rises."""
    bump_percent: int = 15
    """A replacement raises both fees by this much (geth and anvil require ≥ 10 %)."""
    gas_margin: float = 1.2
    """Gas limit = estimate × margin (state may change between simulation and inclusion)."""


@dataclass
class SenderMetrics:
    sent: Counter
    confirmed: Counter
    replaced: Counter
    failed: Counter
    gas_used: Counter
    fee_wei: Counter
    pending: Gauge
    rpc_errors: Counter


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, SenderMetrics] = weakref.WeakKeyDictionary()


def sender_metrics(registry: CollectorRegistry) -> SenderMetrics:
    """One set of metrics per registry, shared by every sender (one per key) on it."""
    if registry not in _METRICS:
        _METRICS[registry] = SenderMetrics(
            sent=Counter("taonode_tx_sent", "Transactions broadcast", ["kind"], registry=registry),
            confirmed=Counter(
                "taonode_tx_confirmed", "Transactions confirmed", ["kind"], registry=registry
            ),
            replaced=Counter(
                "taonode_tx_replaced", "Fee-bumped replacements", ["kind"], registry=registry
            ),
            failed=Counter(
                "taonode_tx_failed",
                "Transactions that failed (simulation, reverted, dropped)",
                ["kind", "reason"],
                registry=registry,
            ),
            gas_used=Counter(
                "taonode_tx_gas_used", "Gas used by mined transactions", ["kind"], registry=registry
            ),
            fee_wei=Counter(
                "taonode_tx_fee_wei",
                "Fees paid (gas used × price, wei)",
                ["kind"],
                registry=registry,
            ),
            pending=Gauge(
                "taonode_tx_pending", "Journaled transactions not final yet", registry=registry
            ),
            rpc_errors=Counter(
                "taonode_sender_rpc_errors", "RPC failures seen by the tx sender", registry=registry
            ),
        )
    return _METRICS[registry]


# -- the sender --------------------------------------------------------------------------------

Fault = Callable[[str], None]
"""Test hook called at ``journaled`` (before broadcast) and ``broadcast`` (before the receipt)."""

_ALREADY_KNOWN = ("already known", "known transaction", "already imported", "alreadyknown")
_NONCE_USED = ("nonce too low", "invalid transaction nonce", "nonce is too low", "oldnonce")


def _is_rpc_down(exc: BaseException) -> bool:
    # Connection refused/reset, timeouts, a node that answers 5xx: retry later, never give up.
    import aiohttp

    return isinstance(exc, OSError | asyncio.TimeoutError | aiohttp.ClientError)


class TxSender:
    def __init__(
        self,
        w3: AsyncWeb3[Any],
        signer: Signer,
        store: StateStore,
        *,
        fees: FeePolicy,
        errors: ErrorDecoder | None = None,
        chain_id: int | None = None,
        confirmations: int = 1,
        replace_after_s: float = 60.0,
        poll_interval_s: float = 1.0,
        registry: CollectorRegistry | None = None,
        fault: Fault | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.w3 = w3
        self.signer = signer
        self.address = signer.address
        self.store = store
        self.fees = fees
        self.errors = errors or ErrorDecoder()
        self.chain_id = chain_id
        self.confirmations = max(1, confirmations)
        self.replace_after_s = replace_after_s
        self.poll_interval_s = poll_interval_s
        self.metrics = sender_metrics(registry if registry is not None else CollectorRegistry())
        self._fault = fault
        self._clock = clock
        self._nonce_lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self._pending: dict[str, TxRecord] = {}
        self._sending: set[str] = set()  # journaled, first broadcast not returned yet
        self._held: dict[str, float] = {}  # at the fee cap since (clock)
        self._changed = asyncio.Condition()
        self.ready = False
        """True once started and while the last poll succeeded (``/readyz``)."""
        self._log = log.bind(sender=self.address)

    # -- start-up ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover the nonce and the pending set from chain + journal; settle what can be."""
        if self.chain_id is None:
            self.chain_id = int(await self.w3.eth.chain_id)
        pending = await self.store.run(
            self.store.journal_for_sender, self.address, self.chain_id, PENDING_TX
        )
        self._pending = {r.key: r for r in pending}
        self.metrics.pending.inc(len(pending))
        chain_nonce = int(await self.w3.eth.get_transaction_count(self.address, "pending"))
        journal_max = await self.store.run(
            self.store.journal_max_nonce, self.address, self.chain_id
        )
        self._next_nonce = max(chain_nonce, -1 if journal_max is None else journal_max + 1)
        self._log.info("sender_started", nonce=self._next_nonce, pending=len(self._pending))
        await self.poll_once()
        self.ready = True

    @property
    def next_nonce(self) -> int:
        if self._next_nonce is None:
            raise SenderError("TxSender.start() has not run")
        return self._next_nonce

    # -- sending -------------------------------------------------------------------------------

    async def send(
        self,
        key: str,
        *,
        to: str | None,
        data: bytes = b"",
        value: int = 0,
        gas: int | None = None,
        kind: str | None = None,
    ) -> TxRecord:
        """Simulate, journal and broadcast one transaction for ``key`` (at most once, ever).

        Returns once it is journaled (and, if the RPC answers, broadcast); :meth:`wait` gives
        the final outcome. Raises :class:`SimulationReverted` if the call would revert.
        """
        assert self.chain_id is not None, "TxSender.start() has not run"
        kind = kind or key.split(":", 1)[0]
        existing = await self.store.run(self.store.journal_get, key)
        if existing is not None:
            if existing.data != data or existing.value != value:
                self._log.warning("tx_key_reused_with_other_payload", key=key)
            return existing
        call: dict[str, Any] = {"from": self.address, "data": data, "value": value}
        if to is not None:
            call["to"] = AsyncWeb3.to_checksum_address(to)
        try:
            await self.w3.eth.call(cast(Any, call), "latest")
            if gas is None:
                estimate = int(await self.w3.eth.estimate_gas(cast(Any, call)))
                gas = int(estimate * self.fees.gas_margin)
        except (ContractLogicError, TransactionFailed) as exc:
            self.metrics.failed.labels(kind, "simulation").inc()
            raise self.errors.exception(key, revert_data(exc) or b"") from exc
        max_fee, tip = await self._fees()
        async with self._nonce_lock:
            existing = await self.store.run(self.store.journal_get, key)
            if existing is not None:  # a concurrent send for the same key won the race
                return existing
            nonce = self.next_nonce
            raw, tx_hash = self._sign(call, nonce, gas, max_fee, tip)
            record = TxRecord(
                key=key,
                sender=self.address,
                chain_id=self.chain_id,
                kind=kind,
                nonce=nonce,
                to=call.get("to"),
                data=data,
                value=value,
                gas=gas,
                status=TxStatus.SIGNED,
                tx_hash=tx_hash,
            )
            attempt = TxAttempt(tx_hash, key, raw, max_fee, tip, self._clock())
            record = await self.store.run(self.store.journal_insert, record, attempt)
            self._next_nonce = nonce + 1
            self._pending[key] = record
            self.metrics.pending.inc()
            self._log.info("tx_journaled", key=key, nonce=nonce, tx=tx_hash)
            # The poll loop leaves it alone until this first broadcast returns.
            self._sending.add(key)
            try:
                if self._fault:
                    self._fault("journaled")
                # Broadcast under the lock too: nodes (eth-tester in particular) reject a
                # nonce gap, so transactions must reach the node in nonce order.
                record = await self._broadcast(record, raw, first=True)
            finally:
                self._sending.discard(key)
        return record

    def _sign(
        self, call: Mapping[str, Any], nonce: int, gas: int, max_fee: int, tip: int
    ) -> tuple[bytes, str]:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            "value": call["value"],
            "data": call["data"],
        }
        if "to" in call:
            tx["to"] = call["to"]
        raw = self.signer.sign_transaction(tx)
        return raw, "0x" + keccak(raw).hex()

    async def _fees(self) -> tuple[int, int]:
        block = await self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0))
        try:
            suggested = int(await self.w3.eth.max_priority_fee)
        except (Web3RPCError, ValueError):
            suggested = self.fees.max_priority_fee
        tip = min(suggested, self.fees.max_priority_fee)
        max_fee = min(self.fees.max_fee_cap, base * self.fees.base_fee_multiplier + tip)
        return max_fee, min(tip, max_fee)

    async def _broadcast(self, record: TxRecord, raw: bytes, *, first: bool) -> TxRecord:
        try:
            await self.w3.eth.send_raw_transaction(raw)
        except Exception as exc:
            text = str(exc).lower()
            if any(s in text for s in _ALREADY_KNOWN):
                pass  # the node has it: as good as a broadcast
            elif any(s in text for s in _NONCE_USED):
                # Mined already (by us: the receipt poll will find it) or by someone else
                # (the poll marks it dropped). Either way, not ours to resend.
                self._log.info("tx_nonce_used", key=record.key, nonce=record.nonce)
            else:
                self.metrics.rpc_errors.inc()
                self._log.warning("tx_broadcast_failed", key=record.key, error=str(exc))
                return record  # stays SIGNED: the poll loop re-broadcasts it
        if first:
            self.metrics.sent.labels(record.kind).inc()
        if self._fault:
            self._fault("broadcast")
        if record.status is TxStatus.SIGNED:
            await self.store.run(self.store.journal_update, record.key, TxStatus.BROADCAST)
            record = _with(record, status=TxStatus.BROADCAST)
            self._pending[record.key] = record
        return record

    # -- waiting and polling -------------------------------------------------------------------

    async def wait(self, key: str) -> TxRecord:
        """Wait until ``key`` is final (confirmed, reverted or dropped); needs :meth:`run`.

        Bound it with ``asyncio.timeout``: a transaction stuck at the fee cap waits forever.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: key not in self._pending)
        record = await self.store.run(self.store.journal_get, key)
        if record is None:
            raise SenderError(f"no transaction journaled for {key!r}")
        return record

    async def transact(self, key: str, **kwargs: Any) -> TxRecord:
        await self.send(key, **kwargs)
        return await self.wait(key)

    def transactor(self, key: str) -> KeyedTransactor:
        """A bindings transactor that sends under the idempotency key ``key``."""
        return KeyedTransactor(self, key)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll receipts, confirm, replace and re-broadcast until ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.poll_once()
                self.ready = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RPC down or flapping: the journal keeps the state
                self.ready = False
                self.metrics.rpc_errors.inc()
                level = "warning" if _is_rpc_down(exc) else "error"
                getattr(self._log, level)("sender_poll_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval_s)

    async def poll_once(self) -> None:
        if not self._pending:
            return
        head = int(await self.w3.eth.block_number)
        mined_nonce = int(await self.w3.eth.get_transaction_count(self.address, "latest"))
        for record in sorted(self._pending.values(), key=lambda r: r.nonce):
            if record.key in self._sending:
                continue
            await self._poll_record(record, head, mined_nonce)
        async with self._changed:
            self._changed.notify_all()

    async def _receipt(self, record: TxRecord) -> tuple[str, Any] | None:
        attempts = await self.store.run(self.store.attempts, record.key)
        for attempt in reversed(attempts):
            try:
                receipt = await self.w3.eth.get_transaction_receipt(cast(Any, attempt.tx_hash))
            except TransactionNotFound:
                continue
            if receipt is not None and receipt.get("blockNumber") is not None:
                return attempt.tx_hash, receipt
        return None

    async def _poll_record(self, record: TxRecord, head: int, mined_nonce: int) -> None:
        found = await self._receipt(record)
        if found is not None:
            tx_hash, receipt = found
            block = int(receipt["blockNumber"])
            ok = int(receipt["status"]) == 1
            deep = head - block + 1 >= self.confirmations
            status = (TxStatus.CONFIRMED if ok else TxStatus.REVERTED) if deep else TxStatus.MINED
            if status is record.status and record.block_number == block:
                return
            gas_used = int(receipt["gasUsed"])
            price = int(receipt.get("effectiveGasPrice", 0))
            await self.store.run(
                self.store.journal_update,
                record.key,
                status,
                tx_hash=tx_hash,
                block_number=block,
                gas_used=gas_used,
                effective_gas_price=price,
                error=None if ok else "reverted on chain",
            )
            if status in FINAL_TX:
                self._finish(record, status)
                self.metrics.gas_used.labels(record.kind).inc(gas_used)
                self.metrics.fee_wei.labels(record.kind).inc(gas_used * price)
                if ok:
                    self.metrics.confirmed.labels(record.kind).inc()
                else:
                    self.metrics.failed.labels(record.kind, "reverted").inc()
            else:
                self._pending[record.key] = _with(record, status=status, block_number=block)
            self._log.info("tx_" + status.value, key=record.key, tx=tx_hash, block=block)
            return
        if mined_nonce > record.nonce:
            # The nonce is used on chain and none of our attempts holds it. (Receipts were
            # read after the nonce, so a just-mined attempt of ours would have been seen.)
            await self.store.run(
                self.store.journal_update,
                record.key,
                TxStatus.DROPPED,
                error="nonce used by another transaction",
            )
            self._finish(record, TxStatus.DROPPED)
            self.metrics.failed.labels(record.kind, "dropped").inc()
            self._log.warning("tx_dropped", key=record.key, nonce=record.nonce)
            return
        attempts = await self.store.run(self.store.attempts, record.key)
        latest = attempts[-1]
        if record.status is TxStatus.MINED:
            # Its block was reorged away: back to the pool.
            self._log.warning("tx_unmined_by_reorg", key=record.key)
            await self.store.run(self.store.journal_update, record.key, TxStatus.BROADCAST)
            record = _with(record, status=TxStatus.BROADCAST, block_number=None)
            self._pending[record.key] = record
            await self._broadcast(record, latest.raw, first=False)
        elif record.status is TxStatus.SIGNED:
            await self._broadcast(record, latest.raw, first=True)
        elif self._clock() - latest.created_at >= self.replace_after_s:
            await self._replace(record, latest)

    async def _replace(self, record: TxRecord, latest: TxAttempt) -> None:
        bump = 100 + self.fees.bump_percent
        cur_fee, cur_tip = await self._fees()
        # Nodes only accept a replacement that raises both fees by ~10 %: bump both or hold.
        max_fee = max(cur_fee, latest.max_fee * bump // 100)
        tip = max(cur_tip, latest.priority_fee * bump // 100)
        if max_fee > self.fees.max_fee_cap or tip > max_fee:
            # At the fee cap: wait at the current price; once per replace_after_s, make sure
            # the node still has it.
            now = self._clock()
            if now - self._held.get(record.key, 0.0) >= self.replace_after_s:
                self._held[record.key] = now
                self._log.info("tx_at_fee_cap", key=record.key, max_fee=latest.max_fee)
                await self._broadcast(record, latest.raw, first=False)
            return
        call = {"to": record.to, "value": record.value, "data": record.data}
        if record.to is None:
            del call["to"]
        raw, tx_hash = self._sign(call, record.nonce, record.gas, max_fee, tip)
        attempt = TxAttempt(tx_hash, record.key, raw, max_fee, tip, self._clock())
        await self.store.run(self.store.journal_add_attempt, attempt)
        record = _with(record, tx_hash=tx_hash)
        self._pending[record.key] = record
        self.metrics.replaced.labels(record.kind).inc()
        self._log.info("tx_replaced", key=record.key, tx=tx_hash, max_fee=max_fee, tip=tip)
        await self._broadcast(record, raw, first=False)

    def _finish(self, record: TxRecord, status: TxStatus) -> None:
        self._held.pop(record.key, None)
        if self._pending.pop(record.key, None) is not None:
            self.metrics.pending.dec()


def _with(record: TxRecord, **changes: Any) -> TxRecord:
    return replace(record, **changes)


class KeyedTransactor:
    """The bindings' :class:`~taonode.chain.tx.Transactor`, sending through the journal.

    One instance per idempotency key: ``coordinator.with_transactor(sender.transactor(
    f"commit:{job}")).commit_result(…)``. ``send`` simulates, journals, broadcasts and waits
    until the transaction is final; a revert in simulation raises the bindings'
    :class:`~taonode.chain.tx.ContractRevert` (decoded against every TAO contract), a reverted
    receipt :class:`~taonode.chain.tx.TxFailed`, a dropped one :class:`SenderError`. Needs
    :meth:`TxSender.run` running.
    """

    def __init__(self, sender: TxSender, key: str) -> None:
        self.sender = sender
        self.key = key

    @property
    def address(self) -> ChecksumAddress:
        return self.sender.address

    async def send(self, tx: TxRequest) -> TxReceipt:
        try:
            await self.sender.send(
                self.key,
                to=tx.to,
                data=tx.data,
                value=tx.value,
                gas=tx.gas,
                kind=tx.label or None,
            )
        except SimulationReverted as exc:
            raise (
                decode_revert(exc.revert.data)
                if exc.revert.data
                else ContractRevert(exc.revert.name, tuple(exc.revert.args.values()))
            ) from exc
        record = await self.sender.wait(self.key)
        if record.status is TxStatus.DROPPED or record.tx_hash is None:
            raise SenderError(f"{self.key}: dropped ({record.error})")
        receipt = await self.sender.w3.eth.get_transaction_receipt(HexStr(record.tx_hash))
        if int(receipt["status"]) != 1:
            raise TxFailed(receipt)
        return receipt
