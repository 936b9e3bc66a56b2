"""Runtime for the generated bindings in :mod:`taonode.chain.bindings`: calls, txs, events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from eth_abi import abi
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.types import BlockIdentifier, LogReceipt, TxReceipt

from taonode.chain.artifacts import canonical_type, load_artifact
from taonode.chain.tx import Transactor, TxRequest, revert_from_exception


def convert(typ: str, value: Any) -> Any:
    """Normalize a decoded ABI value: checksummed addresses, plain bytes, lists for arrays."""
    if typ.endswith("]"):
        inner = typ[: typ.rindex("[")]
        return [convert(inner, v) for v in value]
    if typ == "address":
        return to_checksum_address(value)
    if typ.startswith("bytes"):
        return bytes(value)
    if typ.startswith(("uint", "int")):
        return int(value)
    return value


@dataclass(frozen=True)
class Event:
    """Base of the generated event dataclasses: where the log sits."""

    EVENT_NAME: ClassVar[str] = ""
    TOPIC: ClassVar[bytes] = b""
    TYPES: ClassVar[tuple[str, ...]] = ()
    INDEXED: ClassVar[tuple[bool, ...]] = ()

    address: ChecksumAddress
    block_number: int
    tx_hash: bytes
    log_index: int

    @classmethod
    def decode(cls, log: LogReceipt) -> Self:
        topics = [bytes(t) for t in log["topics"]]
        data_types = [t for t, ix in zip(cls.TYPES, cls.INDEXED, strict=True) if not ix]
        data_values = iter(abi.decode(data_types, bytes(log["data"])))
        topic_values = iter(topics[1:])
        values: list[Any] = []
        for typ, indexed in zip(cls.TYPES, cls.INDEXED, strict=True):
            if indexed:
                (v,) = abi.decode([typ], next(topic_values))
            else:
                v = next(data_values)
            values.append(convert(typ, v))
        return cls(
            to_checksum_address(log["address"]),
            int(log["blockNumber"]),
            bytes(log["transactionHash"]),
            int(log["logIndex"]),
            *values,
        )


E = TypeVar("E", bound=Event)


def event_topic(name: str, types: Sequence[str]) -> bytes:
    return keccak(text=f"{name}({','.join(types)})")


class ContractBinding:
    """One deployed contract: typed views (``eth_call``), transactions, events."""

    CONTRACT: ClassVar[str] = ""
    EVENTS: ClassVar[dict[bytes, type[Event]]] = {}

    def __init__(
        self, w3: AsyncWeb3[Any], address: str, transactor: Transactor | None = None
    ) -> None:
        self.w3 = w3
        self.address: ChecksumAddress = to_checksum_address(address)
        self.transactor = transactor
        self.abi = load_artifact(self.CONTRACT).abi
        self._contract = w3.eth.contract(address=self.address, abi=self.abi)

    def with_transactor(self, transactor: Transactor) -> Self:
        """The same contract, sending as another account."""
        return type(self)(self.w3, self.address, transactor)

    def _tx(self, fn: str, args: Sequence[Any], value: int = 0) -> TxRequest:
        data = self._contract.encode_abi(fn, list(args))
        return TxRequest(
            self.address, bytes.fromhex(data[2:]), value, label=f"{self.CONTRACT}.{fn}"
        )

    async def _send(self, tx: TxRequest) -> TxReceipt:
        if self.transactor is None:
            raise RuntimeError(f"{self.CONTRACT} binding has no transactor: use with_transactor()")
        return await self.transactor.send(tx)

    async def _call(self, fn: str, args: Sequence[Any], block: BlockIdentifier) -> Any:
        try:
            return await self._contract.functions[fn](*args).call(block_identifier=block)
        except Exception as e:
            revert = revert_from_exception(e)
            if revert is None:
                raise
            raise revert from None

    def decode_events(self, receipt: TxReceipt) -> list[Event]:
        """This contract's events in a receipt, in log order."""
        out: list[Event] = []
        for log in receipt["logs"]:
            if to_checksum_address(log["address"]) != self.address or not log["topics"]:
                continue
            cls = self.EVENTS.get(bytes(log["topics"][0]))
            if cls is not None:
                out.append(cls.decode(log))
        return out

    def events_of(self, receipt: TxReceipt, event: type[E]) -> list[E]:
        """Events of one type in a receipt."""
        return [e for e in self.decode_events(receipt) if isinstance(e, event)]

    async def get_events(
        self,
        event: type[E],
        from_block: BlockIdentifier = 0,
        to_block: BlockIdentifier = "latest",
    ) -> list[E]:
        """This contract's events of one type in a block range (``eth_getLogs``)."""
        logs = await self.w3.eth.get_logs(
            {
                "address": self.address,
                "fromBlock": from_block,
                "toBlock": to_block,
                "topics": ["0x" + event.TOPIC.hex()],
            }
        )
        return [event.decode(log) for log in logs]


def abi_types(params: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(canonical_type(p) for p in params)
