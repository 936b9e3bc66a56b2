"""Finding a strategy by name: a built-in one, or ``FILE.py:NAME`` from a file the project
never saw (loaded as a fresh module; ``NAME`` is a :class:`Strategy` subclass or a callable
returning one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from taonode.adversary.builtin import BUILTIN
from taonode.adversary.strategy import Strategy


class StrategyError(ValueError):
    """A strategy that cannot be loaded (one line, for the command line)."""


def load_strategy(spec: str) -> Strategy:
    if spec in BUILTIN:
        return BUILTIN[spec]()
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text.endswith(".py"):
        raise StrategyError(
            f"unknown strategy {spec!r}: give FILE.py:NAME or one of {', '.join(BUILTIN)}"
        )
    path = Path(path_text)
    if not path.is_file():
        raise StrategyError(f"strategy file {path} does not exist")
    name = f"taonode_strategy_{abs(hash(path.resolve()))}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise StrategyError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        raise StrategyError(f"{path}: {type(exc).__name__}: {exc}") from None
    target = getattr(module, attr, None)
    if target is None:
        raise StrategyError(f"{path} has no {attr!r}")
    try:
        strategy = target()
    except Exception as exc:
        raise StrategyError(f"{spec}: constructing it failed: {exc!r}") from None
    if not isinstance(strategy, Strategy):
        raise StrategyError(f"{spec} is not a taonode.adversary.Strategy")
    if not strategy.name:
        strategy.name = attr
    return strategy
