"""The sha256 of files, for manifests and for checking pinned downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(*paths: Path) -> str:
    """Hex sha256 of the files' bytes, one after another in the order given; read in 1 MiB chunks."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
