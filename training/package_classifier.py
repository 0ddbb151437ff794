"""Package an exported classifier as the gate's default Stage 2 model (the int8 variant only).

    python -m training.package_classifier --onnx runs/classifier-onnx --trained runs/classifier \
        --out plugins/models/feedback-minilm

Copies the served ONNX file, the tokenizer and the serving config (with the per-head thresholds the
training chose on its validation split, which export wrote into it; a config whose thresholds are not the
training run's is refused), and writes one manifest: the export manifest (source sha256,
opset, quantisation, agreement), the training report (held-out metrics) and the data manifest (sources,
counts, licences).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from training.export import ExportError


def package(onnx: Path, trained: Path, out: Path) -> dict:
    export_manifest = json.loads((onnx / "manifest.json").read_text())
    report = json.loads((trained / "training_report.json").read_text())
    served = export_manifest["serves"]
    config = json.loads((onnx / "waltz_gate.json").read_text())
    if config.get("thresholds", {}) != report.get("thresholds", {}):
        raise ExportError(f"{onnx} serves thresholds {config.get('thresholds')}, but {trained} chose "
                         f"{report.get('thresholds')}: export that training run again")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        stale.unlink()
    for name in (served, "tokenizer.json", "waltz_gate.json"):  # export wrote training's thresholds into the config
        shutil.copy(onnx / name, out / name)
    data = report.pop("data", None)
    manifest = {
        "name": out.name,
        "export": export_manifest,
        "training": report,
        "data": data,
        "files": {p.name: p.stat().st_size for p in sorted(out.iterdir())},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--trained", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        manifest = package(args.onnx, args.trained, args.out)
    except ExportError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(manifest["files"]))


if __name__ == "__main__":
    main()
