"""HTTP body load: N concurrent large /v1/infer bodies against a prover daemon subprocess.

    python -m bench.http_load [--bodies 4] [--mb 60] [--kind json|safetensors|both]

Starts ``taonode --role prover`` (embedded chain, no models: every body is read and decoded in
full, then answered 404), records the daemon's RSS before, at peak and after, and the worst
``/healthz`` latency while the bodies are in flight (polled every 20 ms from another thread
than the senders, so the client's own sending does not skew it). Prints a table and
writes ``bench/results/http_load.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.node.daemon import Daemon, write_config

RESULTS_DIR = Path(__file__).parent / "results"
MODEL = "0x" + "11" * 32


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def json_body(megabytes: float) -> bytes:
    """A float32 tensor in JSON, ``megabytes`` long (values like 0.12345678)."""
    count = int(megabytes * 1e6 / 11)
    data = ",".join(["0.12345678"] * count)
    return (
        f'{{"model_id":"{MODEL}","inputs":{{"x":{{"dtype":"float32","shape":[{count}],'
        f'"data":[{data}]}}}}}}'
    ).encode()


def safetensors_body(megabytes: float) -> bytes:
    import torch
    from safetensors.torch import save

    return bytes(save({"x": torch.zeros(int(megabytes * 1e6 / 4), dtype=torch.float32)}))


def _post(port: int, body: bytes, ctype: str, query: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", f"/v1/infer{query}", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (BrokenPipeError, ConnectionResetError):
        return -1  # the server refused the body (413) and closed before we finished sending
    finally:
        conn.close()


def _run(port: int, pid: int, bodies: list[tuple[bytes, str, str]]) -> dict[str, Any]:
    """The bodies are sent from their own threads; /healthz is probed from this one."""
    peak = _rss_mb(pid)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda b=b: statuses.append(_post(port, *b)), daemon=True)
        for b in bodies
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    latencies: list[float] = []
    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        probe.request("GET", "/healthz")
        probe.getresponse().read()
        latencies.append(time.perf_counter() - t0)
        peak = max(peak, _rss_mb(pid))
        time.sleep(0.02)
    probe.close()
    for t in threads:
        t.join()
    latencies.sort()
    return {
        "statuses": sorted(statuses),
        "healthz_worst_s": round(latencies[-1], 3) if latencies else None,
        "healthz_p50_s": round(latencies[len(latencies) // 2], 4) if latencies else None,
        "healthz_probes": len(latencies),
        "wall_s": round(time.perf_counter() - started, 2),
        "rss_peak_mb": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=4)
    parser.add_argument("--mb", type=float, default=60.0)
    parser.add_argument("--kind", choices=("json", "safetensors", "both"), default="both")
    args = parser.parse_args()
    kinds = ("json", "safetensors") if args.kind == "both" else (args.kind,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), Path(tmp) / "data")
        with Daemon(config, "--role", "prover") as node:
            port = node.wait_port(120)
            for kind in kinds:
                for mb in sorted({args.mb, 15.0}):
                    if kind == "json":
                        bodies = [(json_body(mb), "application/json", "")] * args.bodies
                    else:
                        body = safetensors_body(mb)
                        bodies = [(body, "application/octet-stream", f"?model_id={MODEL}")]
                        bodies *= args.bodies
                    before = _rss_mb(node.proc.pid)
                    result = _run(port, node.proc.pid, bodies)
                    time.sleep(1.0)
                    rows.append(
                        {
                            "kind": kind,
                            "bodies": args.bodies,
                            "mb": mb,
                            "rss_before_mb": round(before),
                            **result,
                            "rss_after_mb": round(_rss_mb(node.proc.pid)),
                        }
                    )
    print(
        f"{'kind':<12}{'n×MB':>8}{'statuses':>22}{'healthz worst s':>17}"
        f"{'RSS before/peak/after MB':>28}{'wall s':>8}"
    )
    for r in rows:
        rss = f"{r['rss_before_mb']}/{r['rss_peak_mb']}/{r['rss_after_mb']}"
        print(
            f"{r['kind']:<12}{r['bodies']}×{r['mb']:<6g}{r['statuses']!s:>22}"
            f"{r['healthz_worst_s']:>17}"
            f"{rss:>28}{r['wall_s']:>8}"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "http_load.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
