"""Judging against the committed profile: profiles by id, fetched from peers, one judge each.

Attack stopped (issue 11, item 8): voters and challengers judged every result with their local
profile and never compared it with the ``profileId`` the result names on chain, so whoever
controls a node's local file (or the model owner re-registering a profile) decides which
acceptance region applies, and two honest members can disagree. Here a result is judged only
against the profile whose id it commits to:

* Profiles are content-addressed: ``profile_id = keccak256(canonical profile JSON)``
  (:mod:`taonode.runtime.profile`). Bytes from a peer are checked in this order: size bound,
  keccak of the raw bytes against the id (digest before parse), then parsed, then re-encoded
  canonically (must give the same bytes), then checked against the model.
* A node knows the profiles of its model store (several per model) and every profile it
  fetched (persisted under ``<data dir>/profiles/<id>.json``); it serves all of them to peers
  on the blob protocol, under their id.
* A node that lacks the named profile asks the result's prover and the other parties for it;
  if nobody serves it, the node abstains. It never judges with another profile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import structlog
from eth_hash.auto import keccak

from taonode.p2p.blob import BlobSource
from taonode.roles.context import Judge, ServedModel
from taonode.roles.jobdata import RemoteBlobs
from taonode.roles.judge import ProfileJudge
from taonode.runtime.graph import Model
from taonode.runtime.profile import Profile, ProfileError, check_profile_model, profile_from_json

log = structlog.get_logger("taonode.profiles")

MAX_PROFILE_BYTES = 4 * 1024 * 1024
"""A MiniLM profile is ~60 KB; nothing legitimate comes near this."""


def verify_profile_blob(profile_id: bytes, payload: bytes) -> bool:
    """Transport check for a profile blob: bounded size and keccak of the raw bytes."""
    return len(payload) <= MAX_PROFILE_BYTES and bytes(keccak(payload)) == profile_id


def parse_profile_bytes(data: bytes, profile_id: bytes, model: Model) -> Profile:
    """A peer's profile bytes → the profile, only if they are exactly ``profile_id``'s."""
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"profile of {len(data)} bytes exceeds {MAX_PROFILE_BYTES}")
    if bytes(keccak(data)) != profile_id:
        raise ProfileError("profile bytes do not hash to the requested profile id")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProfileError("profile is not JSON") from None
    profile = profile_from_json(doc)
    if profile.canonical() != data:
        raise ProfileError("profile bytes are not canonical")
    check_profile_model(profile, model)
    return profile


class ProfileBook:
    """The profiles a node knows, by id, and one :class:`Judge` per ``(model, profile id)``."""

    def __init__(
        self,
        models: Mapping[bytes, ServedModel],
        k: int,
        *,
        device: str = "cpu",
        profiles: Iterable[Profile] = (),
        remote: RemoteBlobs | None = None,
        store_dir: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.models = models
        self.k = k
        self.device = device
        self.remote = remote
        self.store_dir = store_dir
        self.timeout_s = timeout_s
        self._profiles: dict[bytes, Profile] = {}
        self._canonical: dict[bytes, bytes] = {}
        self._judges: dict[tuple[bytes, bytes], Judge] = {}
        for served in models.values():
            # The node's own judge for its current profile is reused, not rebuilt.
            self._judges[(served.model.model_id, served.profile_id)] = served.judge
            if isinstance(served.judge, ProfileJudge):
                self.add(served.judge.profile, persist=False)
        for profile in profiles:
            self.add(profile, persist=False)
        if store_dir is not None and store_dir.is_dir():
            self._load(store_dir)

    def _load(self, store_dir: Path) -> None:
        for path in sorted(store_dir.glob("*.json")):
            try:
                profile_id = bytes.fromhex(path.stem)
                data = path.read_bytes()
                served = self._model_of(data)
                if served is None:
                    continue
                self.add(parse_profile_bytes(data, profile_id, served.model), persist=False)
            except (OSError, ValueError) as exc:  # a corrupt cache entry is refetched
                log.warning("profile cache entry ignored", path=str(path), error=str(exc))

    def _model_of(self, data: bytes) -> ServedModel | None:
        try:
            model_hex = json.loads(data).get("model_id", "")
            return self.models.get(bytes.fromhex(str(model_hex).removeprefix("0x")))
        except (ValueError, AttributeError):
            return None

    def add(self, profile: Profile, *, persist: bool = True) -> bytes:
        canonical = profile.canonical()
        profile_id = bytes(keccak(canonical))
        self._profiles[profile_id] = profile
        self._canonical[profile_id] = canonical
        if persist and self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.store_dir / f"{profile_id.hex()}.json.tmp"
            tmp.write_bytes(canonical)
            tmp.replace(self.store_dir / f"{profile_id.hex()}.json")
        return profile_id

    def get(self, profile_id: bytes) -> Profile | None:
        return self._profiles.get(profile_id)

    def canonical(self, profile_id: bytes) -> bytes | None:
        """The bytes served to peers under ``profile_id``."""
        return self._canonical.get(profile_id)

    def known_judge(self, model_id: bytes, profile_id: bytes) -> Judge | None:
        """The judge for ``(model, profile)`` from what is known locally (no fetching)."""
        key = (model_id, profile_id)
        judge = self._judges.get(key)
        if judge is not None:
            return judge
        served = self.models.get(model_id)
        profile = self._profiles.get(profile_id)
        if served is None or profile is None or profile.model_id != model_id:
            return None
        judge = ProfileJudge(served.model, profile, self.k, self.device)
        self._judges[key] = judge
        return judge

    async def judge(self, model_id: bytes, profile_id: bytes, peers: Sequence[str]) -> Judge | None:
        """The judge for the profile a result names; fetched by id if needed, else ``None``."""
        known = self.known_judge(model_id, profile_id)
        if known is not None or self.remote is None:
            return known
        served = self.models.get(model_id)
        if served is None:
            return None
        for peer in peers:
            try:
                data = await asyncio.wait_for(
                    self.remote.fetch_blob(peer, profile_id, max_bytes=MAX_PROFILE_BYTES),
                    self.timeout_s,
                )
                profile = await asyncio.to_thread(
                    parse_profile_bytes, data, profile_id, served.model
                )
            except Exception as exc:  # any peer failure or bad bytes: try the next one
                log.debug("profile fetch failed", peer=peer, error=repr(exc))
                continue
            self.add(profile)
            log.info("profile fetched", profile=profile_id.hex()[:16], peer=peer)
            return self.known_judge(model_id, profile_id)
        return None


class ServingWithProfiles:
    """A blob source that also serves the node's profiles under their ids."""

    def __init__(self, inner: BlobSource, book: ProfileBook) -> None:
        self.inner = inner
        self.book = book

    def get(self, digest: bytes) -> bytes | None:
        profile = self.book.canonical(digest)
        return profile if profile is not None else self.inner.get(digest)
