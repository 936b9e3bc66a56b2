"""Which chain a data directory's state belongs to, checked before anything resumes from it.

Why (issue 12 item 8): the state store holds the tx journal (the next nonce, pending
transactions) and the watcher cursor. Resumed against another chain — a fresh embedded chain
after a restart, or a local anvil restarted from genesis under the same chain id — the sender
used nonces the chain had never seen, every commitment timed out and the node kept answering.

``<data_dir>/chain.json`` records the chain id and the genesis block hash the state was written
against. With a real RPC a mismatch stops the node at start-up (exit 2) with what to do: the
operator decides whether the old state may go. The embedded chain lives only as long as the
process, so every start is a new chain: the previous state store is moved aside to
``<data_dir>/previous-chains/`` (never deleted) and the node starts with a fresh journal.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from taonode.logs import get_logger
from taonode.service import StartupError

BINDING_FILE = "chain.json"
STATE_FILES = ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm")
ARCHIVE_DIR = "previous-chains"

log = get_logger("taonode.chainbinding")


@dataclass(frozen=True)
class ChainIdentity:
    chain_id: int
    genesis_hash: str

    def to_json(self) -> dict[str, object]:
        return {"chain_id": self.chain_id, "genesis_hash": self.genesis_hash}


def _read(path: Path) -> ChainIdentity | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return ChainIdentity(int(doc["chain_id"]), str(doc["genesis_hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StartupError(
            f"{path}: unreadable chain binding ({exc}); remove it to rebind"
        ) from None


def _write(path: Path, identity: ChainIdentity) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(identity.to_json()) + "\n", encoding="utf-8")
    tmp.replace(path)


def bind_rpc_chain(data_dir: Path, identity: ChainIdentity) -> None:
    """Refuse to resume state written against another chain; bind a data dir on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / BINDING_FILE
    bound = _read(path)
    if bound is None:
        _write(path, identity)
        return
    if bound != identity:
        raise StartupError(
            f"{data_dir}: its state (tx journal, cursor) belongs to chain {bound.chain_id} with "
            f"genesis {bound.genesis_hash}, but the RPC serves chain {identity.chain_id} with "
            f"genesis {identity.genesis_hash} (a chain restarted from genesis?); resuming would "
            f"reuse nonces that chain never saw. Use another data_dir, or move "
            f"{data_dir / STATE_FILES[0]} and {path} aside to start fresh"
        )


def bind_fresh_embedded_chain(data_dir: Path, identity: ChainIdentity) -> Path | None:
    """Move any state from an earlier (necessarily different) embedded chain aside.

    Returns the archive folder when something was moved.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    present = [data_dir / name for name in STATE_FILES if (data_dir / name).exists()]
    archive: Path | None = None
    if present:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        archive = data_dir / ARCHIVE_DIR / stamp
        suffix = 0
        while archive.exists():
            suffix += 1
            archive = data_dir / ARCHIVE_DIR / f"{stamp}-{suffix}"
        archive.mkdir(parents=True)
        for file in present:
            file.replace(archive / file.name)
        log.warning(
            "embedded chain: state from the previous run's chain moved aside; fresh tx journal",
            archive=str(archive),
        )
    _write(data_dir / BINDING_FILE, identity)
    return archive
