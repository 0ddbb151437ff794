"""What Stage 2 flag evaluation adds to a check: `Stage2Flags.resolve` per request, side by side with a
plain SDK `is_enabled` call, over 10,000 distinct sessions (every request a first sight: the worst case).

    python benchmarks/flags_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from stats import pct
from gate.config import Stage2Settings
from gate.flags import ENFORCE_FLAG, Stage2Flags
from gate.metrics import GateMetrics
from gate.types import CheckRequest



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    flags = Stage2Flags(Stage2Settings(), GateMetrics())
    requests = [CheckRequest(prompt="x", context={"session_id": f"s{r}-{i}"}) for r in range(args.runs) for i in range(10_000)]
    rows = {"Stage2Flags.resolve (the gate's path)": [], "UnleashClient.is_enabled (SDK call)": []}
    for r in range(args.runs):
        batch = requests[r * 10_000 : (r + 1) * 10_000]
        lat = []
        for req in batch:
            t = time.perf_counter()
            flags.resolve(req)
            lat.append((time.perf_counter() - t) * 1e6)
        rows["Stage2Flags.resolve (the gate's path)"].append(lat)
        lat = []
        for req in batch:
            t = time.perf_counter()
            flags.client.is_enabled(ENFORCE_FLAG, {"sessionId": req.context.session_id})
            lat.append((time.perf_counter() - t) * 1e6)
        rows["UnleashClient.is_enabled (SDK call)"].append(lat)
    print(f"{args.runs} runs x 10,000 distinct sessions; medians over runs, microseconds")
    print("| path | p50 us | p99 us | p99.9 us |")
    print("|---|---:|---:|---:|")
    for name, runs in rows.items():
        p50, p99, p999 = (statistics.median(pct(r, q) for r in runs) for q in (0.5, 0.99, 0.999))
        print(f"| {name} | {p50:.1f} | {p99:.1f} | {p999:.1f} |")
    flags.close()


if __name__ == "__main__":
    main()
