"""Loading strategies: built-in names, files the project never saw, and clear one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from taonode.adversary.builtin import BUILTIN
from taonode.adversary.load import StrategyError, load_strategy
from taonode.adversary.strategy import Strategy

EXTERNAL = Path(__file__).with_name("external_strategy.py")


def test_every_builtin_loads_by_name_succeeds() -> None:
    for name in BUILTIN:
        strategy = load_strategy(name)
        assert isinstance(strategy, Strategy)
        assert strategy.name == name
        assert strategy.parties_cache, name


def test_strategy_from_a_file_loads_succeeds() -> None:
    strategy = load_strategy(f"{EXTERNAL}:GarbageMoves")
    assert strategy.name == "garbage-moves"
    (party,) = strategy.parties_cache
    assert party.prover is not None


@pytest.mark.parametrize(
    ("body", "attr", "message"),
    [
        (None, "X", "does not exist"),
        ("x = 1\n", "Missing", "has no 'Missing'"),
        ("X = dict\n", "X", "is not a taonode.adversary.Strategy"),
        ("raise RuntimeError('boom')\n", "X", "RuntimeError: boom"),
    ],
)
def test_bad_strategy_file_is_refused_reverts(
    tmp_path: Path, body: str | None, attr: str, message: str
) -> None:
    path = tmp_path / "mine.py"
    if body is not None:
        path.write_text(body)
    with pytest.raises(StrategyError, match=message):
        load_strategy(f"{path}:{attr}")


def test_unknown_name_lists_the_builtins_reverts() -> None:
    with pytest.raises(StrategyError, match="fp16-weights"):
        load_strategy("no-such-strategy")


def test_production_roles_never_import_the_adversary_package_succeeds() -> None:
    # The honest code paths have no branch for any cheat: nothing under roles/ (or the p2p
    # and chain adapters) may even import the strategies.
    root = Path(__file__).resolve().parents[2] / "taonode"
    for folder in ("roles", "p2p", "chain", "protocol", "runtime", "store", "api"):
        for source in (root / folder).rglob("*.py"):
            text = source.read_text()
            assert "taonode.adversary" not in text, source
    for role in ("prover", "challenger", "voter"):
        text = (root / "roles" / f"{role}.py").read_text().lower()
        for word in ("cheat", "withheld", "silent"):
            assert word not in text, (role, word)
