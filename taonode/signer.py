"""The node's chain identity: a small signing interface, so a remote signer can replace the key.

Every component that signs (transactions, p2p envelopes, EIP-712 votes) takes a :class:`Signer`;
only :class:`LocalSigner` ever holds key material, and it never renders it in ``repr`` or logs.
"""

from __future__ import annotations

from typing import Any, Protocol

from eth_account import Account
from eth_account.messages import SignableMessage, encode_defunct, encode_typed_data
from eth_typing import ChecksumAddress


class Signer(Protocol):
    @property
    def address(self) -> ChecksumAddress: ...

    def sign_message(self, message: SignableMessage) -> bytes:
        """65-byte ``r ‖ s ‖ v`` signature over an EIP-191/EIP-712 signable message."""
        ...

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        """The raw signed transaction, ready for ``eth_sendRawTransaction``."""
        ...


class LocalSigner:
    """A signer over a private key held in memory (loaded from an encrypted keystore)."""

    __slots__ = ("_account",)

    def __init__(self, private_key: bytes) -> None:
        self._account = Account.from_key(private_key)

    def __repr__(self) -> str:
        return f"LocalSigner({self.address})"

    @property
    def address(self) -> ChecksumAddress:
        address: ChecksumAddress = self._account.address
        return address

    def sign_message(self, message: SignableMessage) -> bytes:
        return bytes(self._account.sign_message(message).signature)

    def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return bytes(self._account.sign_transaction(tx).raw_transaction)

    def sign_text(self, data: bytes) -> bytes:
        """EIP-191 ``personal_sign`` over raw bytes."""
        return self.sign_message(encode_defunct(primitive=data))

    def sign_typed(self, typed: dict[str, Any]) -> bytes:
        return self.sign_message(encode_typed_data(full_message=typed))
