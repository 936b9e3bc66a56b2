"""Fixtures: the four reference models exported once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from taonode.runtime import graph
from taonode.runtime.execute import Trace, run_traced
from taonode.runtime.models import REFERENCE_MODELS, minilm


@dataclass(frozen=True)
class Exported:
    name: str
    path: Path
    model: graph.Model
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    trace: Trace


MODEL_NAMES = ("cnn", "transformer", "unet", "minilm")


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    out: dict[str, Exported] = {}
    root = tmp_path_factory.mktemp("models")
    factories = {**REFERENCE_MODELS, "minilm": minilm}
    for name in MODEL_NAMES:
        module, example = factories[name]()
        path = root / f"{name}.pt2"
        model = graph.export(module, example, path)
        inputs = dict(zip(model.input_names, example, strict=True))
        out[name] = Exported(name, path, model, module, inputs, run_traced(model, inputs))
    return out
