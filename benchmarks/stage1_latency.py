"""Stage 1 latency per check through the gate (every built-in pattern pack, prompt + response).

Sizes: 1 KB, 4 KB and 64 KB responses of ordinary English, a 4 KB response with non-ASCII text (the
slower normalisation path), and a 1 MB adversarial string made to trigger backtracking: "a." repeated
makes the e-mail pattern quadratic in a backtracking engine. Python's `re` runs that pattern on small
slices of the same string, side by side, to show what RE2 avoids. Usage:

    python benchmarks/stage1_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time

from stats import pct
from gate import CheckRequest, Gate, GateSettings
from plugins.stage1 import PACKS
from plugins.pattern_pack import PatternPack

SENTENCES = [
    "The quarterly report shows revenue growth in every region except the north.",
    "To bake bread, mix flour, water, salt and yeast, then let the dough rise for two hours.",
    "Our team reviewed the pull request and suggested splitting the migration into two steps.",
    "The museum's new exhibit covers the history of navigation from the astrolabe to GPS.",
    "If the service returns a timeout, retry with exponential backoff and log the request id.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Please book the meeting room for Thursday afternoon and send the agenda beforehand.",
    "The hiking trail climbs steadily for three miles before reaching the ridge viewpoint.",
]
UNICODE = ["Café crème brûlée à la française — délicieux!", "Grüße aus München, schöne Straße.", "東京の天気は晴れです。",
           "Emoji time 🎉🚀 and “smart quotes” too."]


def text_of(size: int, pool: list[str], seed: int = 0) -> str:
    rng = random.Random(seed)
    out = []
    while sum(map(len, out)) < size:
        out.append(rng.choice(pool))
    return " ".join(out)[:size]


def measure(gate: Gate, request: CheckRequest, iterations: int) -> list[float]:
    lat = []
    for _ in range(iterations):
        t = time.perf_counter()
        gate.check(request)
        lat.append((time.perf_counter() - t) * 1000)
    return lat



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    gate = Gate.from_settings(GateSettings())
    prompt = "Can you summarise this document for me?"
    cases = [
        ("1 KB response", text_of(1024, SENTENCES), 3000),
        ("4 KB response", text_of(4096, SENTENCES), 3000),
        ("4 KB non-ASCII response", text_of(4096, SENTENCES + UNICODE * 2), 1000),
        ("64 KB response", text_of(65536, SENTENCES), 200),
        ("1 MB adversarial ('a.' * 524288)", "a." * 524288, 10),
    ]
    print(f"runs={args.runs}; figures are medians over runs of each run's percentile (ms per check)")
    print("| input | p50 | p95 | p99 | max p99 over runs |")
    print("|---|---:|---:|---:|---:|")
    for label, response, iterations in cases:
        request = CheckRequest(prompt=prompt, response=response)
        measure(gate, request, min(iterations, 50))  # warm-up
        runs = [measure(gate, request, iterations) for _ in range(args.runs)]
        p50, p95, p99 = (statistics.median(pct(r, q) for r in runs) for q in (0.5, 0.95, 0.99))
        worst = max(pct(r, 0.99) for r in runs)
        print(f"| {label} | {p50:.3f} | {p95:.3f} | {p99:.3f} | {worst:.3f} |")

    email = next(p for p in PatternPack.load(PACKS / "privacy.yaml").patterns if p.id == "email")
    naive = re.compile(email.regex.pattern, re.IGNORECASE)
    print("\nSame e-mail pattern, same adversarial string: RE2 (the gate's engine) vs Python re (backtracking)")
    print("| input size | RE2 ms | Python re ms |")
    print("|---:|---:|---:|")
    for size in (2_000, 4_000, 8_000, 16_000, 1_048_576):
        text = ("a." * size)[:size]
        t = time.perf_counter()
        email.regex.search(text)
        re2_ms = (time.perf_counter() - t) * 1000
        if size <= 16_000:
            t = time.perf_counter()
            naive.search(text)
            naive_ms = f"{(time.perf_counter() - t) * 1000:.1f}"
        else:
            naive_ms = "not run (quadratic: extrapolates to hours)"
        print(f"| {size} | {re2_ms:.2f} | {naive_ms} |")
    gate.close()


if __name__ == "__main__":
    main()
