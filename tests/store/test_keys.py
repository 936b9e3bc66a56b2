"""Keystores: create/import/load round trips and every start-up error the node must report."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from taonode.commands import keys as keys_command
from taonode.exitcodes import EXIT_OK, EXIT_USAGE
from taonode.keys import (
    InsecureKeystoreError,
    KeystoreError,
    KeystoreFormatError,
    PasswordSource,
    WrongPasswordError,
    create_keystore,
    keystore_address,
    load_signer,
)


def main(argv: list[str]) -> int:
    # Through this command's own parser: taonode.cli imports every command module, some of
    # which land on other branches.
    parser = argparse.ArgumentParser(prog="taonode")
    keys_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


N = 1 << 4  # a tiny scrypt work factor keeps the tests fast; the format is the same
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def test_create_keystore_roundtrip_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    address = create_keystore(path, "pw", private_key=KEY, scrypt_n=N)
    assert address == Account.from_key(KEY).address
    assert (path.stat().st_mode & 0o777) == 0o600
    assert keystore_address(path) == address
    signer = load_signer(path, "pw")
    assert signer.address == address
    sig = signer.sign_message(encode_defunct(text="x"))
    assert Account.recover_message(encode_defunct(text="x"), signature=sig) == address
    assert KEY.hex() not in repr(signer)
    assert KEY.hex() not in path.read_text()


def test_create_keystore_existing_file_reverts(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text("precious")
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        create_keystore(path, "pw", scrypt_n=N)
    assert path.read_text() == "precious"


def test_load_signer_wrong_password_reverts(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, "right", scrypt_n=N)
    with pytest.raises(WrongPasswordError, match="wrong password"):
        load_signer(path, "wrong")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o660])
def test_load_signer_readable_by_others_reverts(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, "pw", scrypt_n=N)
    path.chmod(mode)
    with pytest.raises(InsecureKeystoreError, match="chmod 600"):
        load_signer(path, "pw")


def test_load_signer_missing_or_garbage_reverts(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="does not exist"):
        load_signer(tmp_path / "nope.json", "pw")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    with pytest.raises(KeystoreFormatError):
        load_signer(bad, "pw")
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"version": 1}))
    v1.chmod(0o600)
    with pytest.raises(KeystoreFormatError, match="version 3"):
        load_signer(v1, "pw")


def test_load_signer_tampered_address_reverts(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    create_keystore(path, "pw", private_key=KEY, scrypt_n=N)
    data = json.loads(path.read_text())
    data["address"] = "00" * 20
    path.unlink()
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    with pytest.raises(KeystoreFormatError, match="recorded address"):
        load_signer(path, "pw")


def test_password_source_file_env_prompt_succeeds(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    assert PasswordSource(file=pw).read() == "secret"
    assert PasswordSource(env="PW").read(environ={"PW": "s2"}) == "s2"
    answers = iter(["s3", "s3"])
    assert PasswordSource(prompt=True).read(confirm=True, ask=lambda _: next(answers)) == "s3"


def test_password_source_errors_revert(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="not set"):
        PasswordSource(env="PW").read(environ={})
    with pytest.raises(KeystoreError, match="password file: file not found"):
        PasswordSource(file=tmp_path / "missing").read()
    # The docs say 0600: a group- or world-readable password file is refused, not read.
    for mode in (0o644, 0o640, 0o604, 0o660):
        loose = tmp_path / f"loose{mode:o}"
        loose.write_text("secret\n")
        loose.chmod(mode)
        with pytest.raises(KeystoreError, match=f"has mode {mode:04o}.*chmod 600"):
            PasswordSource(file=loose).read()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(KeystoreError, match="empty"):
        PasswordSource(file=empty).read()
    answers = iter(["a", "b"])
    with pytest.raises(KeystoreError, match="differ"):
        PasswordSource(prompt=True).read(confirm=True, ask=lambda _: next(answers))
    with pytest.raises(KeystoreError, match="no password source"):
        PasswordSource().read()


def test_keys_cli_new_show_import_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAO_PW", "pw")
    out = tmp_path / "new.json"
    code = main(["keys", "new", "--out", str(out), "--password-env", "TAO_PW", "--scrypt-n", "16"])
    assert code == EXIT_OK
    address = capsys.readouterr().out.strip()
    assert load_signer(out, "pw").address == address
    assert main(["keys", "show", str(out)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == address

    keyfile = tmp_path / "key.hex"
    keyfile.write_text("0x" + KEY.hex() + "\n")
    pwfile = tmp_path / "pw"
    pwfile.write_text("pw2")
    pwfile.chmod(0o600)
    imported = tmp_path / "imp.json"
    code = main(
        [
            "keys",
            "import",
            "--out",
            str(imported),
            "--private-key-file",
            str(keyfile),
            "--password-file",
            str(pwfile),
            "--scrypt-n",
            "16",
        ]
    )
    assert code == EXIT_OK
    assert capsys.readouterr().out.strip() == Account.from_key(KEY).address
    assert load_signer(imported, "pw2").address == Account.from_key(KEY).address
    assert os.stat(imported).st_mode & 0o777 == 0o600


def test_keys_cli_errors_revert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TAO_PW", raising=False)
    out = tmp_path / "new.json"
    assert main(["keys", "new", "--out", str(out), "--password-env", "TAO_PW"]) == EXIT_USAGE
    assert "TAO_PW is not set" in capsys.readouterr().err
    assert not out.exists()
    assert main(["keys", "show", str(tmp_path / "missing.json")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.hex"
    bad.write_text("zz")
    monkeypatch.setenv("TAO_PW", "pw")
    args = ["keys", "import", "--out", str(out), "--private-key-file", str(bad)]
    assert main([*args, "--password-env", "TAO_PW"]) == EXIT_USAGE
    assert "not hex" in capsys.readouterr().err
    assert main(["keys"]) == EXIT_USAGE


def test_load_node_signer_checks_mode_before_password_reverts(tmp_path: Path) -> None:
    from taonode.keys import load_node_signer

    path = tmp_path / "k.json"
    create_keystore(path, "pw", scrypt_n=N)
    pwfile = tmp_path / "pw"
    pwfile.write_text("pw\n")
    pwfile.chmod(0o600)
    assert load_node_signer(path, PasswordSource(file=pwfile)).address == keystore_address(path)
    path.chmod(0o644)
    with pytest.raises(InsecureKeystoreError):
        load_node_signer(path, PasswordSource(env="UNSET_VAR_FOR_TEST"))


def test_taonode_cli_keys_show_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taonode.cli import main as taonode_main

    path = tmp_path / "k.json"
    address = create_keystore(path, "pw", private_key=KEY, scrypt_n=N)
    assert taonode_main(["keys", "show", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.strip() == address
