"""`waltz-gate monitor`: alerts on bad runs, a webhook on loopback, a PNG plot."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import pytest


def row(step, **kw):
    base = {"step": step, "stage": 2, "split": "train", "conv_loss": 0.1, "fb_loss": 0.1, "rc_before": 0.5,
            "rc_after": 0.6, "dir": 0.1, "label_acc": 0.8, "format_rate": 1.0, "ftr": 0.2, "kl_conv": 0.01, "kl_fb": 0.02}
    return {**base, **kw}


def write(tmp_path, rows, finished=False):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (tmp_path / "training_manifest.json").write_text("{}")


def monitor(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "gate", "monitor", "--log-dir", str(tmp_path), "--once", *args],
                          capture_output=True, text=True, timeout=60)


def test_healthy_run_has_no_alert(tmp_path):
    write(tmp_path, [row(i) for i in range(1, 6)], finished=True)
    done = monitor(tmp_path)
    assert done.returncode == 0 and "step 5 stage 2" in done.stdout and "ALERT" not in done.stdout


def test_the_live_line_shows_each_reward_term(tmp_path):
    write(tmp_path, [row(1, reward_dir=0.1, reward_label=0.8, reward_format=1.0)])
    done = monitor(tmp_path)
    assert done.returncode == 0 and "R_f dir +0.100 label +0.800 format +1.000" in done.stdout


@pytest.mark.parametrize(
    "rows,args,kind",
    [
        ([row(1), row(2, fb_loss=float("nan"))], [], "nan:fb_loss"),
        ([row(1), row(2, conv_loss=float("inf"))], [], "nan:conv_loss"),
        ([row(1), row(2, kl_fb=0.4)], [], "kl:kl_fb"),
        ([row(i, dir=-0.2) for i in range(1, 11)], ["--dir-min", "0.0", "--window", "10"], "dir"),
    ],
)
def test_alerts(tmp_path, rows, args, kind):
    write(tmp_path, rows)
    done = monitor(tmp_path, *args)
    assert done.returncode == 1 and f"ALERT {kind}:" in done.stdout


def test_stage1_conversation_loss_nan_is_expected(tmp_path):
    write(tmp_path, [row(1, stage=1, conv_loss=float("nan"), kl_conv=float("nan"))])
    assert monitor(tmp_path).returncode == 0


def test_dead_process_alert_and_webhook(tmp_path):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write(tmp_path, [row(1)])
        pid = tmp_path / "train.pid"
        pid.write_text("999999")  # no such process
        done = monitor(tmp_path, "--pid-file", str(pid), "--webhook", f"http://127.0.0.1:{server.server_port}/hook")
        assert done.returncode == 1 and "ALERT dead:" in done.stdout
        assert received and received[0]["kind"] == "dead"
    finally:
        server.shutdown()


def test_plot_writes_a_png(tmp_path):
    write(tmp_path, [row(i) for i in range(1, 20)] + [{"step": 10, "split": "val", "asr": 0.1, "orr": 0.2, "ftr": 0.3}])
    png = tmp_path / "curves.png"
    done = subprocess.run([sys.executable, "-m", "gate", "monitor", "--log-dir", str(tmp_path), "--plot", str(png)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_sentence(tmp_path):
    write(tmp_path, [row(1)])
    blocked = tmp_path / "blocked"
    (blocked / "matplotlib").mkdir(parents=True)
    (blocked / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "gate", "monitor", "--log-dir", str(tmp_path), "--plot", "x.png"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --plot needs matplotlib (pip install matplotlib, or the train extra)."
    assert not (tmp_path / "x.png").exists()
