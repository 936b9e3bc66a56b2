"""The node's local model store: exported programs with their calibrated profiles.

Layout: ``<models_dir>/<model id hex>.pt2`` next to ``<model id hex>.profile.json``. A model
is served (proved, challenged, judged) only with its profile; the file name is checked against
the program's own model id on load, so a swapped file is refused rather than served.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from taonode.runtime.graph import Model, ModelError, load
from taonode.runtime.profile import Profile, ProfileError, load_profile


class ModelStoreError(Exception):
    """A model or profile in the store cannot be used; the message names the file."""


@dataclass(frozen=True)
class StoredModel:
    model: Model
    profile: Profile
    path: Path


def _paths(models_dir: Path, model_id: bytes) -> tuple[Path, Path]:
    stem = model_id.hex()
    return models_dir / f"{stem}.pt2", models_dir / f"{stem}.profile.json"


def add_model(models_dir: Path, program: Path, profile_path: Path) -> StoredModel:
    """Copy a program and its profile into the store (idempotent for the same files)."""
    try:
        model = load(program)
        profile = load_profile(profile_path, model)
    except (ModelError, ProfileError) as exc:
        raise ModelStoreError(str(exc)) from None
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
    return out
