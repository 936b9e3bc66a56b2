"""Chain data that does not fit the served model gets no action (loudly), never an index."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from structlog.testing import capture_logs

from taonode.protocol import decisions as d
from taonode.protocol.dispute import DisputeOpened, JobView, ResultCommitted, apply
from taonode.roles.assemble import range_checked
from taonode.roles.context import Judge, ServedModel
from taonode.runtime.graph import Model

JOB = bytes(range(32))
MODEL = b"m" * 32
PROVER = "0x" + "aa" * 20
ME = "0x" + "cc" * 20


def _view(num_ops: int) -> JobView:
    committed = ResultCommitted(
        JOB, PROVER, MODEL, b"p" * 32, b"i" * 32, b"o" * 32, b"t" * 32, num_ops, 20, 1
    )
    return apply(None, committed)


def _served(num_ops: int) -> dict[bytes, ServedModel]:
    model = cast(Model, SimpleNamespace(num_ops=num_ops))
    return {MODEL: ServedModel(model, b"p" * 32, cast(Judge, None))}


def _policy(job: JobView, head: int) -> list[d.Action]:
    return d.challenger_decide(job, ME, head, d.Assessment.DEVIATES)


def test_range_checked_refuses_foreign_num_ops_reverts() -> None:
    checked = range_checked(_policy, _served(10))
    with capture_logs() as logs:
        assert checked(_view(11), 5) == []
        assert checked(_view(11), 6) == []  # refused again, logged once
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert "11 ops" in errors[0]["problem"]
    disputed = apply(_view(11), DisputeOpened(JOB, ME, 14, 10))
    assert checked(disputed, 11) == []  # no timeout claim, no move: nothing indexes the model


def test_range_checked_passes_matching_and_unserved_succeeds() -> None:
    """The honest case: a view that fits the model (or a model not served here) is decided
    as before."""
    assert range_checked(_policy, _served(10))(_view(10), 5) == [d.Challenge(JOB, 1)]
    assert range_checked(_policy, {})(_view(11), 5) == [d.Challenge(JOB, 1)]
