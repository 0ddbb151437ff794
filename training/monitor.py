"""`waltz-gate monitor`: follow a training run's metrics.jsonl, show it live, and raise alerts.

Each train row reads as one line (`status_line`: the rates, KL, and each term of R_f). Alerts (each raised
once until it clears): a NaN or infinite loss, an agent's KL above its bound (0.1 in the plan), DIR below
target over the last `window` steps, no new step for `stall_minutes`, and a dead training process (from the
launch script's pid file). Alerts go to stdout, and to a webhook (JSON POST) and/or e-mail (SMTP) when
configured.
"""

from __future__ import annotations

import math
import os
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import httpx

from gate.jsonl import parse_lines
from training.waltz import rewards


@dataclass
class Rules:
    kl_max: float = 0.1
    dir_min: float | None = None  # e.g. 0.0: alert when the mean DIR of the window falls below it
    window: int = 50
    stall_minutes: float = 30.0


@dataclass
class Alert:
    kind: str
    message: str


@dataclass
class RunState:
    rows: list[dict] = field(default_factory=list)
    offset: int = 0
    lines: int = 0  # complete lines read so far
    last_growth: float = 0.0
    active: set[str] = field(default_factory=set)


def read_new(path: Path, state: RunState, now: float) -> list[dict]:
    """Complete new lines since the last read (a line still being written is left for next time)."""
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(state.offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    new = [row for _, row in parse_lines(complete.decode("utf-8").split("\n"), str(path), first=state.lines + 1)]
    state.offset += len(complete)
    state.lines += complete.count(b"\n")
    if new:
        state.rows.extend(new)
        state.last_growth = now
    return new


def pid_alive(pid_file: Path | None) -> bool | None:
    if pid_file is None or not pid_file.exists():
        return None
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def check(state: RunState, rules: Rules, now: float, alive: bool | None, finished: bool) -> list[Alert]:
    """The alerts that hold now."""
    train = [r for r in state.rows if r.get("split") == "train"]
    alerts = []
    if train:
        last = train[-1]
        for key in ("conv_loss", "fb_loss"):
            value = last.get(key)
            if not isinstance(value, float):
                continue
            frozen = key == "conv_loss" and last.get("stage") == 1  # no conversation update in stage 1: NaN by design
            if math.isinf(value) or (math.isnan(value) and not frozen):
                alerts.append(Alert(f"nan:{key}", f"step {last['step']}: {key} is {value}"))
        for key in ("kl_conv", "kl_fb"):
            value = last.get(key)
            if isinstance(value, float) and not math.isnan(value) and value > rules.kl_max:
                alerts.append(Alert(f"kl:{key}", f"step {last['step']}: {key} {value:.3f} above its bound {rules.kl_max}"))
        recent = train[-rules.window:]
        if rules.dir_min is not None and len(recent) >= rules.window:
            mean_dir = sum(r["dir"] for r in recent) / len(recent)
            if mean_dir < rules.dir_min:
                alerts.append(Alert("dir", f"mean DIR {mean_dir:.3f} over the last {len(recent)} steps is below "
                                           f"the target {rules.dir_min}"))
    if not finished and state.last_growth and now - state.last_growth > rules.stall_minutes * 60:
        alerts.append(Alert("stall", f"no new step for {(now - state.last_growth) / 60:.0f} minutes"))
    if alive is False and not finished:
        alerts.append(Alert("dead", "the training process is not running and the run has not completed"))
    return alerts


def status_line(row: dict, total: int | None = None) -> str:
    """A train row as the trainer's progress and `waltz-gate monitor` show it; R_f's terms as the row has them."""
    step = f"{row['step']}/{total}" if total else row["step"]
    text = (f"step {step} stage {row['stage']} R_c {row['rc_before']:.3f}->{row['rc_after']:.3f} DIR {row['dir']:+.3f} "
            f"label {row['label_acc']:.3f} format {row['format_rate']:.3f} FTR {row['ftr']:.3f} "
            f"KL {row['kl_conv']:.3f}/{row['kl_fb']:.3f}")
    terms = [f"{t.name} {row[t.metric]:+.3f}" for t in rewards.FEEDBACK_TERMS if t.metric in row]
    return f"{text} R_f {' '.join(terms)}" if terms else text


def fresh(state: RunState, alerts: list[Alert]) -> list[Alert]:
    """Alerts not already raised; an alert that cleared may be raised again later."""
    kinds = {a.kind for a in alerts}
    new = [a for a in alerts if a.kind not in state.active]
    state.active = kinds
    return new


@dataclass
class Notifier:
    webhook: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    email_to: str | None = None
    email_from: str = "waltz-gate-monitor@localhost"

    def send(self, run: str, alert: Alert) -> list[str]:
        """Deliver one alert; returns delivery problems (never raises: monitoring must keep going)."""
        problems = []
        if self.webhook:
            try:
                httpx.post(self.webhook, json={"run": run, "kind": alert.kind, "message": alert.message}, timeout=5.0)
            except httpx.HTTPError as exc:
                problems.append(f"webhook: {type(exc).__name__}")
        if self.smtp_host and self.email_to:
            msg = EmailMessage()
            msg["Subject"], msg["From"], msg["To"] = f"[waltz-gate] {run}: {alert.kind}", self.email_from, self.email_to
            msg.set_content(alert.message)
            try:
                with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=10) as smtp:
                    smtp.send_message(msg)
            except (OSError, smtplib.SMTPException) as exc:
                problems.append(f"smtp: {type(exc).__name__}")
        return problems


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    panels = [("losses", ("conv_loss", "fb_loss"), train), ("rewards", ("rc_before", "rc_after", "dir"), train),
              ("feedback agent", ("label_acc", "format_rate", "ftr"), train),
              ("R_f terms", tuple(t.metric for t in rewards.FEEDBACK_TERMS), train), ("KL", ("kl_conv", "kl_fb"), train),
              ("validation", ("asr", "orr", "ftr"), val)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True)
    for ax, (title, keys, data) in zip(axes, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in data if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if data is val else None, markersize=3)
        ax.set_title(title)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
