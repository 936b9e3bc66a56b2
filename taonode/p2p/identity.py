"""The node's libp2p identity: an ed25519 seed in a key file (mode 0600, created on first start).

This key only names the node on the network; the chain key (a :class:`~taonode.signer.Signer`)
is what makes a message count.  Losing this file only changes the peer id.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

SEED_LEN = 32


class KeyFileError(RuntimeError):
    pass


def load_or_create(path: Path) -> KeyPair:
    """Read the 32-byte seed at ``path``, creating it atomically (0600) if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two nodes racing on one data dir cannot both write a seed.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyFileError(f"{path} is readable by others (mode {mode:o}); chmod 600") from None
        seed = path.read_bytes()
        if len(seed) != SEED_LEN:
            raise KeyFileError(f"{path}: expected {SEED_LEN} bytes, found {len(seed)}") from None
        return create_new_key_pair(seed)
    seed = os.urandom(SEED_LEN)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
        f.flush()
        os.fsync(f.fileno())
    return create_new_key_pair(seed)


def peer_id_of(key_pair: KeyPair) -> str:
    return str(ID.from_pubkey(key_pair.public_key).to_base58())
