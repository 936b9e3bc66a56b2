"""CUDA checks: run only where a GPU is present (CI hosts without one skip them)."""

from __future__ import annotations

import pytest
import torch

from taonode.protocol.votes import Verdict
from taonode.runtime.check import check_trace
from taonode.runtime.execute import run_plain, run_traced
from tests.runtime.conftest import MODEL_NAMES, Exported

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cuda_traced_bit_identical_and_within_bounds_succeeds(
    exported: dict[str, Exported], name: str
) -> None:
    e = exported[name]
    trace = run_traced(e.model, e.inputs, "cuda")
    assert not torch.backends.cuda.matmul.allow_tf32
    for p, t in zip(run_plain(e.model, e.inputs, "cuda"), trace.outputs(e.model), strict=True):
        assert torch.equal(p, t)
    # cuBLAS / cuDNN / flash kernels (TF32 off) must be inside the theoretical bounds,
    # judged on the CPU in FP64.
    cpu = type(trace)({k: v.cpu() for k, v in trace.values.items()})
    checks = check_trace(e.model, cpu)
    bad = [c for c in checks if c.verdict is not Verdict.WITHIN_TOLERANCE]
    assert not bad, [(c.index, c.target, c.stats.max) for c in bad]
