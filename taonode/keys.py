"""Encrypted V3 keystores: create, import, load, and where the password comes from.

The node's key never lives in plaintext config: it sits in a Web3 Secret Storage (V3) file,
written with mode 0600, and is decrypted at start-up with a password read from a file, an
environment variable or an interactive prompt. A keystore that other users can read is refused
(like ssh refuses a world-readable private key): the scrypt work factor slows an attacker down,
it does not stop one.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_utils.address import to_checksum_address

from taonode.config import password_file_problem
from taonode.runtime import safejson
from taonode.signer import LocalSigner

DEFAULT_SCRYPT_N = 1 << 18
KEYSTORE_JSON_LIMITS = safejson.JsonLimits(max_bytes=64 << 10, max_depth=8, max_elements=1000)
"""The V3 default work factor (≈0.5 s and 256 MiB to decrypt): slow for an attacker on purpose."""


class KeystoreError(Exception):
    """A keystore could not be created, read or decrypted; the message says why and what to do."""


class WrongPasswordError(KeystoreError):
    pass


class InsecureKeystoreError(KeystoreError):
    pass


class KeystoreFormatError(KeystoreError):
    pass


@dataclass(frozen=True)
class PasswordSource:
    """Where the keystore password comes from; the first one set wins: file, env, prompt."""

    file: Path | None = None
    env: str | None = None
    prompt: bool = False

    def read(
        self,
        *,
        confirm: bool = False,
        environ: Mapping[str, str] | None = None,
        ask: Callable[[str], str] = getpass.getpass,
    ) -> str:
        if self.file is not None:
            check_password_file(self.file)
            try:
                text = self.file.read_text(encoding="utf-8")
            except OSError as exc:
                raise KeystoreError(f"cannot read password file {self.file}: {exc}") from exc
            # One trailing newline is an editor artefact, not part of the password.
            password = text[:-1] if text.endswith("\n") else text
        elif self.env is not None:
            env = os.environ if environ is None else environ
            if self.env not in env:
                raise KeystoreError(f"password environment variable {self.env} is not set")
            password = env[self.env]
        elif self.prompt:
            password = ask("Keystore password: ")
            if confirm and ask("Repeat password: ") != password:
                raise KeystoreError("the two passwords differ")
        else:
            raise KeystoreError("no password source: give a password file, env variable or prompt")
        if not password:
            raise KeystoreError("empty keystore password")
        return password


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never wider, even for an instant) and make it durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only narrow 0600, but be explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def create_keystore(
    path: Path,
    password: str,
    *,
    private_key: bytes | None = None,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> str:
    """Write a new V3 keystore (a fresh key unless ``private_key``); return its address.

    Refuses to overwrite an existing file: losing a funded key is not undoable.
    """
    if path.exists():
        raise KeystoreError(f"{path} already exists; refusing to overwrite a keystore")
    if private_key is None:
        account = Account.create()
        private_key = bytes(account.key)
    elif len(private_key) != 32:
        raise KeystoreError("a private key is 32 bytes (64 hex characters)")
    try:
        keystore: dict[str, Any] = Account.encrypt(
            private_key, password, kdf="scrypt", iterations=scrypt_n
        )
    except ValueError as exc:  # e.g. a key outside the secp256k1 range
        raise KeystoreError(f"invalid private key: {exc}") from exc
    keystore["address"] = keystore["address"].lower().removeprefix("0x")
    try:
        _write_private(path, json.dumps(keystore).encode())
    except FileExistsError as exc:
        raise KeystoreError(f"{path} already exists; refusing to overwrite a keystore") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot write keystore {path}: {exc}") from exc
    return to_checksum_address("0x" + keystore["address"])


def parse_private_key(text: str) -> bytes:
    """A hex private key (with or without 0x, surrounding whitespace ignored)."""
    hexpart = text.strip().removeprefix("0x").removeprefix("0X")
    try:
        key = bytes.fromhex(hexpart)
    except ValueError as exc:
        raise KeystoreError("the private key is not hex") from exc
    if len(key) != 32:
        raise KeystoreError("a private key is 32 bytes (64 hex characters)")
    return key


def check_password_file(path: Path) -> None:
    problem = password_file_problem(path)
    if problem is not None:
        raise KeystoreError(f"password file: {problem}")


def check_permissions(path: Path) -> None:
    """Refuse a keystore that anyone but its owner can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    if not stat.S_ISREG(mode):
        raise KeystoreError(f"keystore {path} is not a regular file")
    if mode & 0o077:
        raise InsecureKeystoreError(
            f"keystore {path} has mode {stat.S_IMODE(mode):04o}: other users can access it; "
            f"run `chmod 600 {path}`"
        )


def read_keystore(path: Path) -> dict[str, Any]:
    try:
        data = safejson.load_file(path, KEYSTORE_JSON_LIMITS)
    except FileNotFoundError as exc:
        raise KeystoreError(f"keystore {path} does not exist") from exc
    except (OSError, safejson.JsonLimitError) as exc:
        raise KeystoreFormatError(f"{path} is not a JSON keystore: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != 3 or "crypto" not in data:
        raise KeystoreFormatError(f"{path} is not a version 3 keystore")
    return data


def keystore_address(path: Path) -> str:
    """The address stored in a keystore, without decrypting it (``keys show``)."""
    data = read_keystore(path)
    address = data.get("address")
    if not isinstance(address, str):
        raise KeystoreFormatError(f"{path} does not record its address")
    try:
        return to_checksum_address("0x" + address.lower().removeprefix("0x"))
    except ValueError as exc:
        raise KeystoreFormatError(f"{path} records an invalid address {address!r}") from exc


def load_signer(path: Path, password: str) -> LocalSigner:
    """Decrypt a keystore into a signer; every failure is a :class:`KeystoreError`."""
    check_permissions(path)
    data = read_keystore(path)
    try:
        key = bytes(Account.decrypt(data, password))
    except ValueError as exc:
        # eth-keyfile raises ValueError("MAC mismatch") for a wrong password.
        if "MAC mismatch" in str(exc):
            raise WrongPasswordError(f"wrong password for keystore {path}") from exc
        raise KeystoreFormatError(f"cannot decrypt keystore {path}: {exc}") from exc
    except (KeyError, TypeError) as exc:
        raise KeystoreFormatError(f"keystore {path} is malformed: {exc}") from exc
    signer = LocalSigner(key)
    del key
    recorded = data.get("address")
    if isinstance(recorded, str):
        with contextlib.suppress(ValueError):
            if to_checksum_address("0x" + recorded.lower().removeprefix("0x")) != signer.address:
                raise KeystoreFormatError(
                    f"keystore {path} decrypts to {signer.address}, not its recorded address"
                )
    return signer


def load_node_signer(keystore: Path, password: PasswordSource) -> LocalSigner:
    """Start-up path for ``[chain] keystore`` + password file/env: one clear error or a signer.

    The permission check runs before the password is read, so a world-readable keystore is
    refused even when the password source is broken too.
    """
    check_permissions(keystore)
    return load_signer(keystore, password.read())
