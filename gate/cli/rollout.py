"""`rollout init | status | set | advance | kill`: the guarded Stage 2 rollout through the Unleash Admin API.
What `advance` does is decided in gate.rollout; these commands read the server, print, and apply."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer

from gate.cli.common import UsageError
from gate.cli.params import with_params
from gate.flags import ENFORCE_FLAG, KILL_FLAG
from gate.rollout import (AdminAPI, Plan, RolloutError, RolloutState, bootstrap_definitions, decide_advance,
                          read_guards)

app = typer.Typer(help="Guarded Stage 2 rollout through the Unleash Admin API.", no_args_is_help=True)
DEPLOY = Path(__file__).resolve().parents[1] / "unleash"  # flag definitions and rollout plan, shipped in the package
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")]


def _connect(
    plan_file: Annotated[Path, typer.Option("--plan", help="Rollout plan file.")] = DEPLOY / "rollout-plan.yaml",
    admin_url: Annotated[str | None, typer.Option("--admin-url", envvar="UNLEASH_ADMIN_URL", help="Unleash base URL.")] = None,
    admin_token: Annotated[str | None, typer.Option("--admin-token", envvar="UNLEASH_ADMIN_TOKEN", help="Admin API token.")] = None,
) -> dict:
    if not admin_url or not admin_token:
        raise UsageError("the Admin API needs --admin-url and --admin-token (or UNLEASH_ADMIN_URL and UNLEASH_ADMIN_TOKEN)")
    plan = Plan.load(plan_file)
    return {"plan": plan, "api": AdminAPI(admin_url, admin_token, plan.project, plan.environment)}


# Every rollout command takes --plan, --admin-url and --admin-token, and gets the plan and the connected API.
admin_command = with_params(list(inspect.signature(_connect, eval_str=True).parameters.values()), _connect,
                            replaces=("plan", "api"))


@app.command("init")
@admin_command
def rollout_init(
    plan: Plan,
    api: AdminAPI,
    flags: Annotated[Path, typer.Option(help="Flag definitions (Unleash client features format).")] = DEPLOY / "flags.json",
    dry_run: DryRun = False,
) -> None:
    """Create the Stage 2 flags on the server as the definitions file describes them (existing ones are kept)."""
    for definition in bootstrap_definitions(flags):
        exists = api.feature(definition["name"]) is not None
        if dry_run or exists:
            typer.echo(f"{definition['name']}: {'exists, kept' if exists else 'would be created'}")
        else:
            api.create(definition)
            typer.echo(f"{definition['name']}: created in {plan.project}/{plan.environment}")


@app.command("status")
@admin_command
def rollout_status(plan: Plan, api: AdminAPI, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Current percentage and plan step, kill switch, time at this step, and the guards."""
    state = RolloutState.read(api)
    step = plan.index(state.percent)
    try:
        guards = [g.__dict__ for g in read_guards(plan.guards)]
    except RolloutError as exc:
        guards = [{"name": "metrics", "ok": False, "text": str(exc)}]
    held = None if state.hours_held == float("inf") else round(state.hours_held, 2)
    status = {"percent": state.percent, "step": None if step is None else step + 1, "steps": len(plan.steps),
              "kill_switch": state.kill_switch, "hours_at_step": held, "guards": guards}
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    where = f"step {status['step']} of {len(plan.steps)}" if step is not None else "not a step of the plan"
    typer.echo(f"{ENFORCE_FLAG}: {state.percent}% ({where}); kill switch {'ON' if state.kill_switch else 'off'}; "
               f"held {held} h")
    for g in guards:
        typer.echo(f"  guard {g['name']}: {'ok' if g['ok'] else 'TRIPPED'} - {g['text']}")


@app.command("set")
@admin_command
def rollout_set(
    api: AdminAPI,
    percent: Annotated[int, typer.Argument(min=0, max=100, help="Share of sessions (0-100) with Stage 2 enforced.")],
    dry_run: DryRun = False,
) -> None:
    """Set the enforce percentage directly (no guards: an operator's decision)."""
    current, _ = api.rollout()
    if dry_run:
        typer.echo(f"would set {ENFORCE_FLAG} from {current}% to {percent}%")
        return
    api.set_rollout(percent)
    typer.echo(f"{ENFORCE_FLAG}: {current}% -> {percent}%")


@app.command("advance")
@admin_command
def rollout_advance(
    plan: Plan,
    api: AdminAPI,
    rollback: Annotated[bool, typer.Option("--rollback", help="If a guard trips, set the previous step.")] = False,
    dry_run: DryRun = False,
) -> None:
    """Move to the next step of the plan if the dwell time is over and every guard passes."""
    move = decide_advance(plan, RolloutState.read(api), lambda: read_guards(plan.guards), rollback)
    if move.action == "refuse":
        raise UsageError(move.reason)
    if move.action == "stay":
        typer.echo(move.reason)
        return
    if move.target is not None and not dry_run:
        api.set_rollout(move.target)
    if move.action == "advance":
        typer.echo(f"would advance {ENFORCE_FLAG} from {move.percent}% to {move.target}% ({move.reason})" if dry_run
                   else f"{ENFORCE_FLAG}: {move.percent}% -> {move.target}% ({move.reason})")
        return
    if move.action == "roll back":
        typer.echo(f"{'would roll' if dry_run else 'rolled'} back {move.percent}% -> {move.target}%: {move.reason}", err=True)
    else:
        typer.echo(f"refused to advance from {move.percent}%: {move.reason}", err=True)
    raise typer.Exit(3)


@app.command("kill")
@admin_command
def rollout_kill(
    api: AdminAPI,
    state: Annotated[str, typer.Argument(help="on: Stage 2 off everywhere; off: back to the rollout.")],
) -> None:
    """Turn the kill switch on or off."""
    if state not in ("on", "off"):
        raise UsageError(f"kill takes on or off, not {state!r}")
    api.set_enabled(KILL_FLAG, state == "on")
    typer.echo(f"{KILL_FLAG}: {state}")
