"""The node's local model store: exported programs with their calibrated profiles.

Layout: ``<models_dir>/<model id hex>.pt2`` next to ``<model id hex>.profile.json`` (the
profile this node's prover commits to), plus any number of further profiles of the stored
models under ``<models_dir>/profiles/<profile id hex>.json`` (canonical bytes, so the file
name is the keccak of the content). Challengers and voters judge a result by the profile id it
names, so a node may need several profiles per model. A model is served only with its profile;
file names are checked against the program's model id and the profile's id on load, so a
swapped file is refused rather than served.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from eth_hash.auto import keccak

from taonode.runtime.graph import Model, ModelError, load
from taonode.runtime.profile import Profile, ProfileError, check_profile_model, load_profile

PROFILES = "profiles"


class ModelStoreError(Exception):
    """A model or profile in the store cannot be used; the message names the file."""


@dataclass(frozen=True)
class StoredModel:
    model: Model
    profile: Profile
    path: Path
    profiles: tuple[Profile, ...] = ()
    """Further profiles of this model held by id (``profiles/``), current one excluded."""


def _paths(models_dir: Path, model_id: bytes) -> tuple[Path, Path]:
    stem = model_id.hex()
    return models_dir / f"{stem}.pt2", models_dir / f"{stem}.profile.json"


def check_profile_k(profile: Profile, k: int, where: Path, program: Path | None = None) -> None:
    """Refuse a profile without segment thresholds for the deployment's ``k``.

    Stops the loss of issue 13: a challenger whose profile lacks the deployment's k cannot
    judge any sub-segment, times out and forfeits its bond while the cheat finalizes.
    """
    if k in profile.segments:
        return
    have = " ".join(str(x) for x in sorted(profile.segments)) or "none"
    model = program if program is not None else "MODEL.pt2"
    raise ModelStoreError(
        f"{where}: the profile has segment thresholds for k = {have}, not for the "
        f"deployment's k = {k}; recalibrate it: taonode calibrate --model {model} "
        f"--deployment DEPLOYMENT.json --generate 8 --out {where.name}"
    )


def add_model(
    models_dir: Path, program: Path, profile_path: Path, k: int | None = None
) -> StoredModel:
    """Copy a program and its profile into the store (idempotent for the same files).

    With ``k`` (the deployment's branching factor) a profile without thresholds for it is
    refused before anything is copied.
    """
    try:
        model = load(program)
        profile = load_profile(profile_path, model)
    except (ModelError, ProfileError) as exc:
        raise ModelStoreError(str(exc)) from None
    if k is not None:
        check_profile_k(profile, k, profile_path, program)
    models_dir.mkdir(parents=True, exist_ok=True)
    pt2, prof = _paths(models_dir, model.model_id)
    for src, dst in ((program, pt2), (profile_path, prof)):
        if src.resolve() != dst.resolve():
            tmp = dst.with_suffix(dst.suffix + ".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
    return StoredModel(model, profile, pt2)


def load_models(models_dir: Path) -> list[StoredModel]:
    """Every model in the store; any unusable entry is an error (never silently skipped)."""
    if not models_dir.is_dir():
        return []
    out: list[StoredModel] = []
    for pt2 in sorted(models_dir.glob("*.pt2")):
        profile_path = pt2.with_name(pt2.stem + ".profile.json")
        if not profile_path.is_file():
            raise ModelStoreError(f"{pt2}: no profile next to it ({profile_path.name})")
        try:
            model = load(pt2)
            profile = load_profile(profile_path, model)
        except (ModelError, ProfileError) as exc:
            raise ModelStoreError(str(exc)) from None
        if pt2.stem != model.model_id.hex():
            raise ModelStoreError(
                f"{pt2}: file name does not match the program's model id 0x{model.model_id.hex()}"
            )
        out.append(StoredModel(model, profile, pt2))
    extra = _extra_profiles(models_dir, {s.model.model_id: s.model for s in out})
    return [
        StoredModel(
            s.model,
            s.profile,
            s.path,
            tuple(
                p
                for p in extra
                if p.model_id == s.model.model_id and p.profile_id != s.profile.profile_id
            ),
        )
        for s in out
    ]


def _extra_profiles(models_dir: Path, models: dict[bytes, Model]) -> list[Profile]:
    out: list[Profile] = []
    for path in sorted((models_dir / PROFILES).glob("*.json")):
        data = path.read_bytes()
        if keccak(data).hex() != path.stem:
            raise ModelStoreError(f"{path}: file name is not the keccak of its content")
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            raise ModelStoreError(str(exc)) from None
        if profile.canonical() != data:
            raise ModelStoreError(f"{path}: profile is not in canonical form")
        model = models.get(profile.model_id)
        if model is None:
            raise ModelStoreError(
                f"{path}: profile of model 0x{profile.model_id.hex()}, not stored"
            )
        try:
            check_profile_model(profile, model)
        except ProfileError as exc:
            raise ModelStoreError(f"{path}: {exc}") from None
        out.append(profile)
    return out


def add_profile(models_dir: Path, profile_path: Path) -> Profile:
    """Store a further profile of a stored model under its id (idempotent)."""
    try:
        profile = load_profile(profile_path)
    except ProfileError as exc:
        raise ModelStoreError(str(exc)) from None
    pt2, _ = _paths(models_dir, profile.model_id)
    if not pt2.is_file():
        raise ModelStoreError(f"{profile_path}: model 0x{profile.model_id.hex()} is not stored")
    target = models_dir / PROFILES / f"{profile.profile_id.hex()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_bytes(profile.canonical())
    tmp.replace(target)
    return profile
