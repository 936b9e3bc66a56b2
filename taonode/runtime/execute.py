"""Executing a model op by op: the traced forward, segments, and single ops in FP64.

The traced forward runs exactly the nodes ``ExportedProgram.module()`` runs, in the same order
and with the same kernels, so its outputs are bit-identical to the plain forward on the same
device (tested). It keeps every op output and does *no* hashing: commitments are computed by
:func:`taonode.runtime.commit.commit` off the response path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx

from taonode.runtime.graph import SKIPPED_OPS, Model, ModelError

OpExecutor = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]
"""Runs one op node: ``(target, args, kwargs) -> result``. The default calls the ATen kernel;
execution variants (calibration) and simulated downgrades (detection study) substitute their own.
Fused metadata nodes always run the default kernel."""


def default_executor(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return target(*args, **kwargs)


@dataclass(frozen=True)
class Trace:
    """Every committed value of one run: user inputs and all op outputs, by name."""

    values: Mapping[str, torch.Tensor]

    def frontier(self, model: Model, cut: int) -> dict[str, torch.Tensor]:
        """The tensors of frontier ``S_cut``."""
        if not 0 <= cut <= model.num_ops:
            raise ModelError(f"cut {cut} outside 0..{model.num_ops}")
        return {name: self.values[name] for name in model.frontiers[cut]}

    def outputs(self, model: Model) -> tuple[torch.Tensor, ...]:
        return tuple(self.values[name] for name in model.outputs)

    def inputs(self, model: Model) -> dict[str, torch.Tensor]:
        return {name: self.values[name] for name in model.input_names}

    def op_inputs(self, model: Model, index: int) -> dict[str, torch.Tensor]:
        return {name: self.values[name] for name in model.ops[index].inputs}

    def op_outputs(self, model: Model, index: int) -> dict[str, torch.Tensor]:
        return {name: self.values[name] for name in model.ops[index].outputs}


def set_fp32_mode(device: torch.device) -> None:
    """Honest FP32: TF32 off for matmul and cuDNN (DESIGN §2 job lifecycle)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def _literal(value: Any, device: torch.device, fp64: bool) -> Any:
    if isinstance(value, torch.device):
        return device
    if fp64 and value is torch.float32:
        return torch.float64
    return value


def _call(
    node: fx.Node,
    env: Mapping[str, Any],
    device: torch.device,
    fp64: bool = False,
    executor: OpExecutor = default_executor,
) -> Any:
    def arg(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a.name]
        if isinstance(a, list | tuple):
            return type(a)(arg(x) for x in a)
        return _literal(a, device, fp64)

    args = tuple(arg(a) for a in node.args)
    kwargs = {k: arg(v) for k, v in node.kwargs.items()}
    assert callable(node.target)
    return executor(node.target, args, kwargs)


_DEVICE_WEIGHTS: weakref.WeakKeyDictionary[Model, dict[str, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def weights_on(model: Model, device: torch.device) -> dict[str, Any]:
    """The model's weights on ``device``, copied there once per (model, device)."""
    if device.type == "cpu":
        return dict(model.weights)
    per_model = _DEVICE_WEIGHTS.setdefault(model, {})
    key = str(device)
    if key not in per_model:
        per_model[key] = {name: t.to(device) for name, t in model.weights.items()}
    return dict(per_model[key])


def check_inputs(model: Model, inputs: Mapping[str, torch.Tensor]) -> None:
    """Refuse inputs whose names, shapes or dtypes differ from the exported ones."""
    expected = set(model.input_names)
    if set(inputs) != expected:
        raise ModelError(
            f"input names {sorted(inputs)} do not match the model's {sorted(expected)}"
        )
    for spec in model.inputs:
        t = inputs[spec.name]
        if tuple(t.shape) != spec.shape or t.dtype != spec.dtype:
            raise ModelError(
                f"input {spec.name}: got {tuple(t.shape)} {t.dtype}, "
                f"the model was exported for {spec.shape} {spec.dtype}"
            )


def run_traced(
    model: Model,
    inputs: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    executor: OpExecutor | None = None,
    enable_grad: bool = False,
) -> Trace:
    """Run the whole model keeping every op output (no hashing on this path).

    ``executor`` replaces the kernel call of every op node (not of fused metadata nodes).
    ``enable_grad`` keeps autograd on (the bound-aware adversary differentiates through ops).
    """
    dev = torch.device(device)
    set_fp32_mode(dev)
    check_inputs(model, inputs)
    env: dict[str, Any] = weights_on(model, dev)
    env.update({k: v.to(dev) for k, v in inputs.items()})
    values: dict[str, torch.Tensor] = {k: env[k] for k in model.input_names}
    owned = {o for op in model.ops for o in op.outputs}
    op_nodes = {op.name for op in model.ops}
    run_op = executor if executor is not None else default_executor
    with torch.set_grad_enabled(enable_grad):
        for node in model.program.graph.nodes:
            if node.op != "call_function" or node.target in SKIPPED_OPS:
                continue
            if node.name in op_nodes:
                env[node.name] = _call(node, env, dev, executor=run_op)
            else:
                env[node.name] = _call(node, env, dev)
            if node.name in owned:
                values[node.name] = env[node.name]
    return Trace(values=values)


def run_plain(
    model: Model, inputs: Mapping[str, torch.Tensor], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, ...]:
    """The reference forward: ``ExportedProgram.module()`` on the same device."""
    dev = torch.device(device)
    set_fp32_mode(dev)
    check_inputs(model, inputs)
    module = model.program.module().to(dev)
    with torch.no_grad():
        out = module(*(inputs[n].to(dev) for n in model.input_names))
    return tuple(out) if isinstance(out, list | tuple) else (out,)


def _run_ops(
    model: Model,
    indices: Iterable[int],
    values: Mapping[str, torch.Tensor],
    dev: torch.device,
    fp64: bool,
    weights: Mapping[str, Any] | None = None,
    executor: OpExecutor = default_executor,
) -> dict[str, Any]:
    env: dict[str, Any] = dict(weights if weights is not None else weights_on(model, dev))
    for k, v in values.items():
        v = v.to(dev)
        env[k] = v.to(torch.float64) if fp64 and v.dtype == torch.float32 else v
    done: set[str] = set()
    with torch.no_grad():
        for i in indices:
            body = model.closures[i]
            for node in body:
                if node.name in done:
                    continue
                run = executor if node is body[-1] else default_executor
                env[node.name] = _call(node, env, dev, fp64, executor=run)
                done.add(node.name)
            op = model.ops[i]
            if op.outputs != (op.name,):
                env.update(split_outputs(model, i, env[op.name]))
    return env


def run_segment(
    model: Model,
    a: int,
    b: int,
    frontier: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    executor: OpExecutor | None = None,
) -> dict[str, torch.Tensor]:
    """Execute ops ``[a, b)`` from frontier ``S_a`` (FP32) and return frontier ``S_b``."""
    env = _segment_env(model, a, b, frontier, device, executor)
    return {name: env[name] for name in model.frontiers[b]}


def run_segment_values(
    model: Model,
    a: int,
    b: int,
    frontier: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    executor: OpExecutor | None = None,
) -> dict[str, torch.Tensor]:
    """Like :func:`run_segment` but returns every output of ops ``[a, b)`` as well as ``S_b``."""
    env = _segment_env(model, a, b, frontier, device, executor)
    names = [o for i in range(a, b) for o in model.ops[i].outputs] + list(model.frontiers[b])
    return {name: env[name] for name in names}


def _segment_env(
    model: Model,
    a: int,
    b: int,
    frontier: Mapping[str, torch.Tensor],
    device: str | torch.device,
    executor: OpExecutor | None,
) -> dict[str, Any]:
    if not 0 <= a <= b <= model.num_ops:
        raise ModelError(f"segment [{a}, {b}) outside 0..{model.num_ops}")
    missing = set(model.frontiers[a]) - set(frontier)
    if missing:
        raise ModelError(f"frontier {a} lacks {sorted(missing)}")
    dev = torch.device(device)
    set_fp32_mode(dev)
    start = {k: frontier[k] for k in model.frontiers[a]}
    run = executor if executor is not None else default_executor
    return _run_ops(model, range(a, b), start, dev, False, executor=run)


def op_call_fp64(
    model: Model,
    index: int,
    inputs: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Target and FP64 arguments of op ``index`` (fused metadata nodes already applied).

    FP32 inputs and weights are upcast exactly; ``float32`` dtype arguments become ``float64``.
    """
    missing = set(model.ops[index].inputs) - set(inputs)
    if missing:
        raise ModelError(f"op {index} needs {sorted(missing)}")
    dev = torch.device(device)
    weights = {
        k: t.to(dev).to(torch.float64) if t.dtype == torch.float32 else t.to(dev)
        for k, t in _weights_read(model, index).items()
    }
    closure = model.closures[index]
    env = dict(weights)
    for k in model.ops[index].inputs:
        v = inputs[k].to(dev)
        env[k] = v.to(torch.float64) if v.dtype == torch.float32 else v
    with torch.no_grad():
        for node in closure[:-1]:
            env[node.name] = _call(node, env, dev, fp64=True)
    node = closure[-1]

    def arg(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return env[a.name]
        if isinstance(a, list | tuple):
            return type(a)(arg(x) for x in a)
        return _literal(a, dev, True)

    return (
        node.target,
        tuple(arg(a) for a in node.args),
        {k: arg(v) for k, v in node.kwargs.items()},
    )


def split_outputs(model: Model, index: int, result: Any) -> dict[str, torch.Tensor]:
    """Name the op's result(s): the op node itself, or its getitem outputs."""
    op = model.ops[index]
    if op.outputs == (op.name,):
        return {op.name: result}
    return {o: result[model.nodes[o].args[1]] for o in op.outputs}


def eval_op_fp64(
    model: Model,
    index: int,
    inputs: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """Op ``index`` evaluated in FP64 on upcast inputs and weights, outputs by name."""
    target, args, kwargs = op_call_fp64(model, index, inputs, device)
    with torch.no_grad():
        return split_outputs(model, index, target(*args, **kwargs))


def _weights_read(model: Model, index: int) -> dict[str, torch.Tensor]:
    names = {
        m.name
        for node in model.closures[index]
        for m in node.all_input_nodes
        if m.name in model.weights
    }
    return {n: model.weights[n] for n in names}


def generate_inputs(model: Model, seed: int) -> dict[str, torch.Tensor]:
    """Random inputs of the exported shapes: normal floats, token ids below the vocabulary of
    the embedding that reads them, 0/1 attention masks (inputs named ``*mask*``) with a padded
    tail. Used by calibration (``--generate``) and the detection study."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for spec in model.inputs:
        if spec.dtype.is_floating_point:
            out[spec.name] = torch.randn(spec.shape, generator=g).to(spec.dtype)
        elif "mask" in spec.name and len(spec.shape) == 2:
            b, s = spec.shape
            lengths = torch.randint(max(1, s // 2), s + 1, (b,), generator=g)
            out[spec.name] = (torch.arange(s)[None, :] < lengths[:, None]).to(spec.dtype)
        else:
            high = 2
            for op, body in zip(model.ops, model.closures, strict=True):
                node = body[-1]
                if op.target == "aten.embedding.default" and spec.name in op.inputs:
                    weight = node.args[0]
                    if isinstance(weight, fx.Node) and weight.name in model.weights:
                        high = int(model.weights[weight.name].shape[0])
            out[spec.name] = torch.randint(0, high, spec.shape, generator=g).to(spec.dtype)
    return out
