"""Committee votes: verdicts and the EIP-712 typed data the dispute contract verifies.

Normative for the contracts: domain ``EIP712Domain(string name,string version,uint256 chainId,
address verifyingContract)`` with ``name = "TAO"``, ``version = "1"`` and the dispute game's
address; message type ``Vote(bytes32 disputeId,uint8 verdict)`` with
``disputeId = keccak256(abi.encode(bytes32 jobId, uint16 attempt))`` (:func:`dispute_id`): a result
can be disputed more than once (queued challenges), and binding the attempt stops a vote signed
in one dispute from being replayed into a later dispute of the same result.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

DOMAIN_NAME = "TAO"
DOMAIN_VERSION = "1"
VOTE_TYPE = "Vote(bytes32 disputeId,uint8 verdict)"


class Verdict(enum.IntEnum):
    """A committee member's judgement of the disputed op (0 is reserved for "no vote")."""

    THEORETICAL_VIOLATION = 1
    EMPIRICAL_VIOLATION = 2
    WITHIN_TOLERANCE = 3
    DATA_UNAVAILABLE = 4

    @property
    def slashes_prover(self) -> bool:
        return self is not Verdict.WITHIN_TOLERANCE


def dispute_id(job_id: bytes, attempt: int) -> bytes:
    """The id of dispute number ``attempt`` (1, 2, ...) of a result, as
    ``TaoCoordinator.disputeIdFor`` computes it."""
    if len(job_id) != 32:
        raise ValueError("job id must be 32 bytes")
    if not 1 <= attempt < 2**16:
        raise ValueError("attempt must be in 1..65535")
    return keccak(job_id + attempt.to_bytes(32, "big"))


@dataclass(frozen=True)
class VoteDomain:
    chain_id: int
    verifying_contract: str


def typed_vote(domain: VoteDomain, dispute_id: bytes, verdict: Verdict) -> dict[str, Any]:
    if len(dispute_id) != 32:
        raise ValueError("dispute id must be 32 bytes")
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Vote": [
                {"name": "disputeId", "type": "bytes32"},
                {"name": "verdict", "type": "uint8"},
            ],
        },
        "primaryType": "Vote",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": domain.chain_id,
            "verifyingContract": to_checksum_address(domain.verifying_contract),
        },
        "message": {"disputeId": dispute_id, "verdict": int(verdict)},
    }


def sign_vote(private_key: bytes, domain: VoteDomain, dispute_id: bytes, verdict: Verdict) -> bytes:
    """65-byte ``r ‖ s ‖ v`` signature over the typed vote."""
    message = encode_typed_data(full_message=typed_vote(domain, dispute_id, verdict))
    signed = Account.sign_message(message, private_key)
    return bytes(signed.signature)


def recover_voter(domain: VoteDomain, dispute_id: bytes, verdict: Verdict, signature: bytes) -> str:
    """Checksummed address that produced ``signature`` over the typed vote."""
    message = encode_typed_data(full_message=typed_vote(domain, dispute_id, verdict))
    return str(Account.recover_message(message, signature=signature))
