"""Transactions for the bindings: a request type, the sender interface, and revert decoding.

The bindings build :class:`TxRequest` objects and hand them to a :class:`Transactor`. The node's
journaling sender (``taonode.chain.sender``) can implement the same protocol; the
:class:`DirectTransactor` here simulates (``eth_estimateGas``), signs with a
:class:`~taonode.signer.Signer`, sends and waits, and serves tests, deployment and the benches.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eth_abi import abi
from eth_typing import ChecksumAddress
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from taonode.chain.artifacts import error_specs
from taonode.signer import Signer

GAS_HEADROOM = 1.25
"""Gas limit = estimate × this (estimates are exact on both local chains; refunds vary)."""


@dataclass(frozen=True)
class TxRequest:
    """A call to send: ``to`` is None for a contract creation."""

    to: ChecksumAddress | None
    data: bytes
    value: int = 0
    gas: int | None = None
    label: str = ""


class ContractRevert(Exception):
    """A contract rejected a call; ``name`` is its custom error (or ``Error``/``Panic``/``?``)."""

    def __init__(self, name: str, args: Sequence[Any] = (), raw: bytes = b"") -> None:
        self.name = name
        self.error_args = tuple(args)
        self.raw = raw
        super().__init__(f"{name}{self.error_args!r}" if self.error_args else name)


class TxFailed(RuntimeError):
    """A mined transaction has status 0 (it passed the simulation but reverted on chain)."""

    def __init__(self, receipt: TxReceipt) -> None:
        self.receipt = receipt
        super().__init__(f"transaction {receipt['transactionHash'].hex()} reverted")


def decode_revert(data: bytes) -> ContractRevert:
    """Turn revert data into a :class:`ContractRevert` using every contract's custom errors."""
    selector = data[:4]
    if selector == bytes.fromhex("08c379a0"):
        (msg,) = abi.decode(["string"], data[4:])
        return ContractRevert("Error", (msg,), data)
    if selector == bytes.fromhex("4e487b71"):
        (code,) = abi.decode(["uint256"], data[4:])
        return ContractRevert("Panic", (code,), data)
    spec = error_specs().get(selector)
    if spec is None:
        return ContractRevert("?", (data.hex(),), data)
    values = abi.decode(list(spec.types), data[4:]) if spec.types else ()
    return ContractRevert(spec.name, values, data)


def revert_from_exception(exc: Exception) -> ContractRevert | None:
    """The revert inside a web3 (anvil, HTTP) or eth-tester exception, if it is one."""
    if isinstance(exc, ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return decode_revert(bytes.fromhex(data[2:]))
        return ContractRevert("Error", (exc.message or str(exc),))
    if type(exc).__name__ == "TransactionFailed":  # eth_tester.exceptions.TransactionFailed
        text = str(exc.args[0]) if exc.args else ""
        text = text.removeprefix("execution reverted: ")
        if text.startswith(("b'", 'b"')):
            try:
                raw = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return ContractRevert("?", (text,))
            if isinstance(raw, bytes):
                return decode_revert(raw) if raw else ContractRevert("?", ())
        return ContractRevert("Error", (text,))
    return None


class Transactor(Protocol):
    """Sends transactions for one account."""

    @property
    def address(self) -> ChecksumAddress: ...

    async def send(self, tx: TxRequest) -> TxReceipt:
        """Send, wait for the receipt; raise :class:`ContractRevert` when the call would revert."""
        ...


class DirectTransactor:
    """Simulate, sign, send and wait — one transaction at a time per instance."""

    def __init__(self, w3: AsyncWeb3[Any], signer: Signer, *, timeout: float = 120.0) -> None:
        self.w3 = w3
        self.signer = signer
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._chain_id: int | None = None

    @property
    def address(self) -> ChecksumAddress:
        return self.signer.address

    async def estimate(self, tx: TxRequest) -> int:
        params: dict[str, Any] = {"from": self.address, "data": tx.data, "value": tx.value}
        if tx.to is not None:
            params["to"] = tx.to
        try:
            return int(await self.w3.eth.estimate_gas(params))  # type: ignore[arg-type]
        except Exception as e:
            revert = revert_from_exception(e)
            if revert is None:
                raise
            raise revert from None

    async def send(self, tx: TxRequest) -> TxReceipt:
        async with self._lock:
            gas = tx.gas if tx.gas is not None else int(await self.estimate(tx) * GAS_HEADROOM)
            if self._chain_id is None:
                self._chain_id = int(await self.w3.eth.chain_id)
            fields: dict[str, Any] = {
                "chainId": self._chain_id,
                "nonce": await self.w3.eth.get_transaction_count(self.address, "pending"),
                "gas": gas,
                "gasPrice": await self.w3.eth.gas_price,
                "value": tx.value,
                "data": tx.data,
            }
            if tx.to is not None:
                fields["to"] = tx.to
            raw = self.signer.sign_transaction(fields)
            tx_hash = await self.w3.eth.send_raw_transaction(raw)
            receipt = await self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.timeout, poll_latency=0.02
            )
        if receipt["status"] != 1:
            raise TxFailed(receipt)
        return receipt
