"""The installed package, not the checkout: a built wheel serves Stage 2 from the files it ships."""

from __future__ import annotations

import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_built_wheel_checks_with_stage2_from_another_folder(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = dist.glob("waltz_gate-*.whl")
    # The dependencies come from this environment's site-packages (a path, so its editable install of this
    # checkout is not loaded); waltz-gate itself only from the wheel.
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    own_site = subprocess.run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(own_site, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([bin_dir / "python", "-c", "import gate, plugins; print(gate.__file__, plugins.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, check=True).stdout
    assert str(REPO) not in where and str(tmp_path / "venv") in where

    done = subprocess.run([bin_dir / "waltz-gate", "check", "--prompt", "Can you help with my essay?",
                           "--response", "Sure: start with a thesis, then three paragraphs of evidence."],
                          capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["stage2"]["mode"] == "enforce"
    assert [f["status"] for f in verdict["findings"] if f["plugin"] == "waltzrl"] in ([], ["ok"])
    assert not verdict["degraded"] and verdict["timings"]["plugin.waltzrl"] > 0
