from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from taonode.protocol.votes import Verdict, VoteDomain, dispute_id, recover_voter, sign_vote

DOMAIN = VoteDomain(chain_id=31337, verifying_contract="0x" + "ab" * 20)
DISPUTE = bytes(range(32))


def test_sign_vote_recovers_signer_succeeds() -> None:
    account = Account.create()
    sig = sign_vote(account.key, DOMAIN, DISPUTE, Verdict.EMPIRICAL_VIOLATION)
    assert len(sig) == 65
    assert recover_voter(DOMAIN, DISPUTE, Verdict.EMPIRICAL_VIOLATION, sig) == account.address


def test_sign_vote_other_domain_or_verdict_reverts() -> None:
    account = Account.create()
    sig = sign_vote(account.key, DOMAIN, DISPUTE, Verdict.WITHIN_TOLERANCE)
    other_chain = VoteDomain(chain_id=1, verifying_contract=DOMAIN.verifying_contract)
    assert recover_voter(other_chain, DISPUTE, Verdict.WITHIN_TOLERANCE, sig) != account.address
    assert recover_voter(DOMAIN, DISPUTE, Verdict.DATA_UNAVAILABLE, sig) != account.address


def test_verdict_slashing_side_succeeds() -> None:
    assert not Verdict.WITHIN_TOLERANCE.slashes_prover
    assert all(v.slashes_prover for v in Verdict if v is not Verdict.WITHIN_TOLERANCE)


def test_dispute_id_binds_the_attempt_succeeds() -> None:
    job = bytes(range(32))
    ids = {dispute_id(job, a) for a in (1, 2, 3)} | {dispute_id(bytes(32), 1)}
    assert len(ids) == 4
    # keccak256(abi.encode(bytes32 jobId, uint16 attempt)), as TaoCoordinator.disputeIdFor
    assert dispute_id(job, 2) == keccak(job + (2).to_bytes(32, "big"))
    account = Account.create()
    sig = sign_vote(account.key, DOMAIN, dispute_id(job, 1), Verdict.WITHIN_TOLERANCE)
    again = recover_voter(DOMAIN, dispute_id(job, 2), Verdict.WITHIN_TOLERANCE, sig)
    assert again != account.address


def test_dispute_id_bad_arguments_reverts() -> None:
    for job, attempt in ((b"short", 1), (bytes(32), 0), (bytes(32), 2**16)):
        with pytest.raises(ValueError, match="must be"):
            dispute_id(job, attempt)
