"""Loading a ``torch.export`` program as TAO's ordered op list (DESIGN §2 "Objects").

Op indexing (normative):

* The graph is the one ``torch.export.export`` produces (ATen ops, no further decomposition), so
  ``linear``, ``conv2d``, ``layer_norm``, ``scaled_dot_product_attention`` stay single ops.
* Every ``call_function`` node in graph order is an op, except
  - *metadata* nodes (:data:`METADATA_OPS`: views, reshapes, transposes, ``getitem``...) all of
    whose users are ``call_function`` nodes: they are fused into each consumer (recomputed there
    from the consumer's inputs; no value of theirs is ever committed), and
  - :data:`SKIPPED_OPS` (runtime shape asserts with no output), which are not executed at all.
  A metadata node that feeds the graph output stays an op of its own (with an exact bound).
* Op ``i``'s *inputs* are the committed values its fused closure reads: user inputs and outputs
  of earlier ops. Weights (parameters, buffers, lifted constants) are part of the model.
* Frontier ``S_c`` holds the values produced before cut ``c`` (user inputs count as produced
  before op 0) and read by an op ``>= c`` or by the graph output (which reads at index ``N``).

``model_id = keccak256(canonical graph JSON ‖ tensor digests of the weights in name order)``;
the JSON lists every node (name, target, literal arguments, value references) and the user
inputs' shapes and dtypes, so any change to the graph, an argument or a weight changes it.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from eth_hash.auto import keccak
from torch import fx

from taonode.runtime.digest import tensor_digest

aten = torch.ops.aten

METADATA_OPS: frozenset[Any] = frozenset(
    {
        operator.getitem,
        aten.view.default,
        aten.reshape.default,
        aten._unsafe_view.default,
        aten.transpose.int,
        aten.permute.default,
        aten.t.default,
        aten.expand.default,
        aten.expand_as.default,
        aten.unsqueeze.default,
        aten.squeeze.dim,
        aten.squeeze.dims,
        aten.squeeze.default,
        aten.flatten.using_ints,
        aten.unflatten.int,
        aten.select.int,
        aten.slice.Tensor,
        aten.narrow.default,
        aten.split.Tensor,
        aten.split_with_sizes.default,
        aten.chunk.default,
        aten.unbind.int,
        aten.contiguous.default,
        aten.alias.default,
        aten.detach.default,
        aten.clone.default,
    }
)
SKIPPED_OPS: frozenset[Any] = frozenset(
    {aten._assert_tensor_metadata.default, aten._assert_scalar.default}
)


class ModelError(ValueError):
    """A program taonode cannot index or run, or inputs that do not fit it."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class Op:
    """One indexed op: its node, the committed values it reads and the ones it produces."""

    index: int
    name: str
    target: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fused: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Model:
    """A loaded program. ``program`` and ``weights`` are shared, never mutated."""

    model_id: bytes
    ops: tuple[Op, ...]
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    frontiers: tuple[tuple[str, ...], ...]
    """Sorted value names of ``S_c`` for ``c = 0..N``."""
    program: torch.export.ExportedProgram = field(repr=False)
    weights: Mapping[str, torch.Tensor] = field(repr=False)
    nodes: Mapping[str, fx.Node] = field(repr=False)
    closures: tuple[tuple[fx.Node, ...], ...] = field(repr=False)
    """Per op: the fused metadata nodes it recomputes, then the op node, in graph order."""
    producer: Mapping[str, int] = field(repr=False)
    """Value name → index of the op producing it (``-1`` for user inputs)."""

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for op in self.ops:
            hist[op.target] = hist.get(op.target, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def parameter_count(self) -> int:
        return sum(t.numel() for t in self.weights.values())


def target_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    name = str(target)
    return name.removeprefix("aten::")


def _encode(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return {"ref": value.name}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in sorted(value.items())}
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return {"f": value.hex()}  # exact and JSON-safe (inf, nan included)
    return {"t": str(value)}


def _weights(ep: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    sig = ep.graph_signature
    out: dict[str, torch.Tensor] = {}
    for name, key in sig.inputs_to_parameters.items():
        out[name] = ep.state_dict[key]
    for name, key in sig.inputs_to_buffers.items():
        out[name] = ep.state_dict[key] if key in ep.state_dict else ep.constants[key]
    for name, key in sig.inputs_to_lifted_tensor_constants.items():
        out[name] = ep.constants[key]
    return {k: v.detach() for k, v in out.items()}


def from_program(ep: torch.export.ExportedProgram) -> Model:
    """Index ``ep`` (see the module docstring for the rules)."""
    sig = ep.graph_signature
    if sig.buffers_to_mutate or sig.user_inputs_to_mutate:
        raise ModelError("the program mutates buffers or inputs (export it in eval mode)")
    weights = _weights(ep)
    graph = ep.graph
    nodes = {n.name: n for n in graph.nodes}
    user_inputs = list(sig.user_inputs)
    specs: list[InputSpec] = []
    for name in user_inputs:
        val = nodes[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ModelError(f"user input {name} is not a tensor")
        specs.append(InputSpec(name, tuple(int(d) for d in val.shape), val.dtype))
    (output_node,) = [n for n in graph.nodes if n.op == "output"]
    output_users = set(output_node.all_input_nodes)

    def fused(n: fx.Node) -> bool:
        return (
            n.op == "call_function"
            and n.target in METADATA_OPS
            and n not in output_users
            and all(u.op == "call_function" for u in n.users)
        )

    op_nodes = [
        n
        for n in graph.nodes
        if n.op == "call_function" and n.target not in SKIPPED_OPS and not fused(n)
    ]
    if not op_nodes:
        raise ModelError("the program has no ops")
    # Multi-output ops (not metadata) own their getitem users: those are the committed values.
    owned: dict[fx.Node, fx.Node] = {}
    for n in op_nodes:
        if n.target is operator.getitem and isinstance(n.args[0], fx.Node):
            src = n.args[0]
            if src in op_nodes:
                owned[n] = src
    op_nodes = [n for n in op_nodes if n not in owned]

    producer: dict[str, int] = {name: -1 for name in user_inputs}
    ops: list[Op] = []
    closures: list[tuple[fx.Node, ...]] = []
    for index, n in enumerate(op_nodes):
        outs = [g.name for g in graph.nodes if owned.get(g) is n] or [n.name]
        for o in outs:
            producer[o] = index
        closure: set[fx.Node] = set()
        reads: set[str] = set()
        stack = list(n.all_input_nodes)
        while stack:
            m = stack.pop()
            if m.name in producer and producer[m.name] != index:
                reads.add(m.name)
            elif m.op == "placeholder":
                if m.name not in weights:
                    raise ModelError(f"placeholder {m.name} is neither input nor weight")
            elif fused(m):
                if m not in closure:
                    closure.add(m)
                    stack.extend(m.all_input_nodes)
            elif m in owned:  # getitem of a multi-output op: read as a value
                reads.add(m.name)
            else:
                raise ModelError(f"op {n.name} reads {m.name}, which is not yet produced")
        order = {m: i for i, m in enumerate(graph.nodes)}
        reads_sorted = tuple(sorted(reads, key=lambda r: order[nodes[r]]))
        body = (*tuple(sorted(closure, key=order.__getitem__)), n)
        closures.append(body)
        ops.append(
            Op(
                index=index,
                name=n.name,
                target=target_name(n.target),
                inputs=reads_sorted,
                outputs=tuple(outs),
                fused=tuple(m.name for m in body[:-1]),
            )
        )
    outputs = tuple(m.name for m in output_node.all_input_nodes)
    for o in outputs:
        if o not in producer:
            raise ModelError(f"graph output {o} is not an op output or user input")
    n_ops = len(ops)
    last_use: dict[str, int] = {}
    for op in ops:
        for r in op.inputs:
            last_use[r] = max(last_use.get(r, -1), op.index)
    for o in outputs:
        last_use[o] = n_ops
    frontiers = tuple(
        tuple(sorted(v for v, p in producer.items() if p < c <= last_use.get(v, -1)))
        for c in range(n_ops + 1)
    )
    return Model(
        model_id=compute_model_id(ep, weights, specs),
        ops=tuple(ops),
        inputs=tuple(specs),
        outputs=outputs,
        frontiers=frontiers,
        program=ep,
        weights=weights,
        nodes=nodes,
        closures=tuple(closures),
        producer=producer,
    )


def canonical_graph(ep: torch.export.ExportedProgram, specs: Sequence[InputSpec]) -> bytes:
    """The canonical JSON encoding of the graph that ``model_id`` commits to."""
    shapes = {s.name: {"shape": list(s.shape), "dtype": str(s.dtype)} for s in specs}
    encoded = []
    for n in ep.graph.nodes:
        item: dict[str, Any] = {"name": n.name, "op": n.op}
        if n.op == "placeholder" and n.name in shapes:
            item["input"] = shapes[n.name]
        elif n.op == "call_function":
            item["target"] = target_name(n.target)
        item["args"] = _encode(n.args)
        item["kwargs"] = _encode(n.kwargs)
        encoded.append(item)
    doc = {"format": "taonode-graph", "version": 1, "nodes": encoded}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def compute_model_id(
    ep: torch.export.ExportedProgram,
    weights: Mapping[str, torch.Tensor],
    specs: Sequence[InputSpec],
) -> bytes:
    digests = b"".join(
        name.encode() + b"\x00" + tensor_digest(weights[name], threads=2)
        for name in sorted(weights)
    )
    return bytes(keccak(canonical_graph(ep, specs) + digests))


def load(path: str | Path) -> Model:
    """Load and index a ``.pt2`` file written by :func:`export` (or ``torch.export.save``)."""
    if not Path(path).is_file():
        raise ModelError(f"{path}: no such file")
    try:
        ep = torch.export.load(str(path))
    except Exception as exc:
        # A corrupt or foreign file fails in many ways inside torch (BadZipFile, pickle and
        # JSON errors, RecursionError on hostile nesting): all mean "not a usable .pt2".
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: not a usable .pt2 file: {detail}") from None
    try:
        return from_program(ep)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: cannot index the exported program: {exc}") from None


def export(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path
) -> Model:
    """``torch.export`` ``module`` (in eval mode) with static shapes and save it to ``path``."""
    module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, example_inputs)
    torch.export.save(ep, str(path))
    return from_program(ep)


Factory = Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]
