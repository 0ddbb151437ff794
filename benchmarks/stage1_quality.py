"""Stage 1 quality: recall on harmful and attack prompts, false flags on benign prompts.

Prompts come from public sets inside PyPI wheels (training/sources.py). A prompt counts as flagged when
the gate's pre-check decision is revise or block. Usage:

    python benchmarks/stage1_quality.py [--show N]
"""

from __future__ import annotations

import argparse
from collections import Counter

from gate import CheckRequest, Decision, Gate, GateSettings
from training.evaluate import wilson
from training.sources import rows

SETS = [("advbench", "harmful"), ("harmbench", "harmful"), ("donotanswer", "harmful"),
        ("jailbreaks", "injection"), ("slabs", "injection"), ("slabs", "benign"), ("mtbench", "benign")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--show", type=int, default=0, help="print up to N misses / false flags per set")
    args = ap.parse_args()
    gate = Gate.from_settings(GateSettings())
    print("| set | kind | prompts | flagged | rate | 95% CI |")
    print("|---|---|---:|---:|---:|---|")
    for name, kind in SETS:
        prompts = sorted({r.prompt for r in rows(name) if r.kind == kind})
        flagged, cats, missed = 0, Counter(), []
        for p in prompts:
            v = gate.check(CheckRequest(prompt=p))
            if v.decision in (Decision.REVISE, Decision.BLOCK):
                flagged += 1
                cats.update(f.category for f in v.findings if f.action != Decision.ALLOW)
            else:
                missed.append(p)
        rate = flagged / len(prompts)
        lo, hi = wilson(flagged, len(prompts))
        label = "recall" if kind != "benign" else "false-flag rate"
        print(f"| {name} | {kind} ({label}) | {len(prompts)} | {flagged} | {rate:.3f} | {lo:.3f}-{hi:.3f} |")
        if args.show:
            examples = missed if kind != "benign" else [p for p in prompts if p not in set(missed)]
            for p in examples[: args.show]:
                print(f"    {'missed' if kind != 'benign' else 'flagged'}: {p[:140]!r}")
            print(f"    categories: {dict(cats.most_common(6))}")
    gate.close()



if __name__ == "__main__":
    main()
