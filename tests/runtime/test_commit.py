from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from taonode.runtime.commit import commit
from taonode.runtime.execute import Trace
from taonode.runtime.merkle import frontier_entry, merkle_root, verify_proof
from taonode.runtime.tracedir import TraceFormatError, load_trace, save_trace
from tests.runtime.conftest import Exported


def test_commit_trace_root_and_proofs_succeeds(exported: dict[str, Exported]) -> None:
    e = exported["transformer"]
    c = commit(e.model, e.trace)
    assert c.trace_root == merkle_root(list(c.frontier_digests))
    assert len(c.frontier_digests) == e.model.num_ops + 1
    for cut in (0, 5, e.model.num_ops):
        assert verify_proof(c.trace_root, cut, c.frontier_digests[cut], c.frontier_proof(cut))
        for name in e.model.frontiers[cut]:
            pos, proof = c.tensor_proof(e.model, cut, name)
            leaf = frontier_entry(name, c.tensor_digests[name])
            assert verify_proof(c.frontier_digests[cut], pos, leaf, proof)


def test_commit_changes_with_one_bit_succeeds(exported: dict[str, Exported]) -> None:
    e = exported["cnn"]
    base = commit(e.model, e.trace)
    name = e.model.ops[4].outputs[0]
    values = dict(e.trace.values)
    t = values[name].clone()
    t.view(torch.int32).view(-1)[0] ^= 1
    values[name] = t
    other = commit(e.model, Trace(values))
    assert other.trace_root != base.trace_root
    # Only frontiers containing the value change.
    changed = [
        i
        for i, (a, b) in enumerate(zip(base.frontier_digests, other.frontier_digests, strict=True))
        if a != b
    ]
    assert changed == [c for c, names in enumerate(e.model.frontiers) if name in names]


def test_trace_dir_round_trip_succeeds(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["unet"]
    c = save_trace(e.model, e.trace, tmp_path / "t")
    loaded = load_trace(tmp_path / "t", e.model)
    assert loaded.trace_root == c.trace_root
    assert loaded.model_id == e.model.model_id
    for k, v in e.trace.values.items():
        assert torch.equal(loaded.trace.values[k], v)


def test_trace_dir_corrupt_file_reverts(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["cnn"]
    c = save_trace(e.model, e.trace, tmp_path / "t")
    name = e.model.ops[2].outputs[0]
    path = tmp_path / "t" / "tensors" / f"{c.tensor_digests[name].hex()}.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(TraceFormatError, match="does not match its digest"):
        load_trace(tmp_path / "t")


def test_trace_dir_truncated_file_reverts(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["cnn"]
    c = save_trace(e.model, e.trace, tmp_path / "t")
    path = tmp_path / "t" / "tensors" / f"{c.tensor_digests[e.model.outputs[0]].hex()}.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(TraceFormatError, match="cannot read"):
        load_trace(tmp_path / "t")


def test_trace_dir_tampered_manifest_reverts(exported: dict[str, Exported], tmp_path: Path) -> None:
    e = exported["cnn"]
    save_trace(e.model, e.trace, tmp_path / "t")
    mpath = tmp_path / "t" / "manifest.json"
    manifest = json.loads(mpath.read_text())
    manifest["trace_root"] = "0x" + "11" * 32
    mpath.write_text(json.dumps(manifest))
    load_trace(tmp_path / "t")  # without the model only file digests are checked
    with pytest.raises(TraceFormatError, match="trace root"):
        load_trace(tmp_path / "t", e.model)
    with pytest.raises(TraceFormatError, match=r"is for model"):
        load_trace(tmp_path / "t", exported["unet"].model)
