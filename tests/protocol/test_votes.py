from __future__ import annotations

from eth_account import Account

from taonode.protocol.votes import Verdict, VoteDomain, recover_voter, sign_vote

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
