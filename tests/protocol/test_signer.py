from __future__ import annotations

from eth_account import Account
from eth_account.messages import encode_defunct

from taonode.signer import LocalSigner


def test_local_signer_signs_recoverably_and_hides_key_succeeds() -> None:
    account = Account.create()
    signer = LocalSigner(bytes(account.key))
    sig = signer.sign_message(encode_defunct(primitive=b"hello"))
    assert Account.recover_message(encode_defunct(primitive=b"hello"), signature=sig) == (
        account.address
    )
    assert bytes(account.key).hex() not in repr(signer)
    assert signer.address in repr(signer)
