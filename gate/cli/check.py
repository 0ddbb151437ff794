"""`check`, `plugins`, `serve` and `health`: the gate itself, from the command line and as the HTTP sidecar."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from gate.cli.common import ConfigOption, UsageError, open_gate
from gate.config import ConfigError, load_settings
from gate.jsonl import parse_requests, read_text
from gate.types import CheckRequest, Context, Stage2Mode

app = typer.Typer()
NO_REQUEST = "give either --prompt (with an optional --response) or --input FILE.jsonl, or pipe JSONL requests in"


@app.command()
def check(
    prompt: Annotated[str | None, typer.Option(help="The user's prompt.")] = None,
    response: Annotated[str | None, typer.Option(help="The agent's response; omit to pre-check the prompt.")] = None,
    session: Annotated[str | None, typer.Option(help="Session id (the Stage 2 rollout is sticky on it).")] = None,
    user: Annotated[str | None, typer.Option(help="User id.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant.")] = None,
    agent: Annotated[str | None, typer.Option(help="Name of the agent that answered.")] = None,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSONL file of requests, or one JSON request or array of them ('-': standard input); writes one verdict per line.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write JSONL (default stdout).")] = None,
    stage2: Annotated[Stage2Mode | None, typer.Option(help="Override the Stage 2 flags for this check.")] = None,
    config: ConfigOption = None,
) -> None:
    """Check a prompt (and response) and print the verdict as JSON; or check a JSONL file of requests (piped
    requests are read from standard input)."""
    if prompt is not None and input is not None:
        raise UsageError("give either --prompt (with an optional --response) or --input FILE.jsonl, not both")
    if prompt is None and input is None:
        if sys.stdin.isatty():
            raise UsageError(NO_REQUEST)
        input = Path("-")
    if input is not None:
        requests = _read_requests(input)
    else:
        ctx = Context(session_id=session, user_id=user, tenant=tenant, agent=agent)
        requests = [CheckRequest(prompt=prompt, response=response, context=ctx)]
    gate = open_gate(config)
    try:
        lines = (gate.check(r, stage2_mode=stage2).model_dump_json() for r in requests)
        if output is None:
            for line in lines:
                typer.echo(line)
        else:
            try:
                with output.open("w", encoding="utf-8") as fh:
                    for line in lines:
                        fh.write(line + "\n")
            except OSError as exc:
                raise UsageError(f"cannot write {output}: {exc.strerror}") from None
            typer.echo(f"wrote {len(requests)} verdicts to {output}", err=True)
    finally:
        gate.close()


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """List installed plugins with their stage and status."""
    from gate.registry import installed, load_plugins

    settings = load_settings(config)
    try:
        loaded = {p.name: p for p in load_plugins(settings)}
        load_error = None
    except ConfigError as exc:
        loaded, load_error = {}, str(exc)
    rows = []
    for name, ep in sorted(installed().items()):
        enabled = name in settings.plugins
        try:
            cls = ep.load()
            stage, description = getattr(cls, "stage", None), getattr(cls, "description", "")
        except Exception as exc:
            stage, description = None, f"failed to import: {exc}"
        if name in loaded:
            status = "ready" if loaded[name].ready() else "not ready"
        elif enabled:
            status = f"error: {load_error}"
        else:
            status = "disabled"
        rows.append({"name": name, "stage": stage, "enabled": enabled, "status": status, "description": description})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "stage", "enabled", "status", "description")
    for r in rows:
        table.add_row(r["name"], str(r["stage"]), "yes" if r["enabled"] else "no", r["status"], r["description"])
    Console().print(table)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default from config: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 8080).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes (default 1).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the HTTP sidecar (uvicorn). SIGTERM lets in-flight checks finish and flushes the audit log."""
    import os
    import tempfile

    import uvicorn

    from gate import logs, server

    overrides = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    for key, value in overrides.items():  # the worker processes read settings from the environment too
        os.environ[f"WALTZ_GATE_SERVER__{key.upper()}"] = str(value)
    if config is not None:
        os.environ[server.CONFIG_ENV] = str(config.resolve())
    settings = load_settings(config)
    # Fail fast, with a sentence, on bad config, plugins or token file, before the workers start.
    server.load_token(settings)
    open_gate(config).close()
    if settings.server.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="waltz-gate-metrics-")
    logs.configure(access_log=settings.server.access_log)
    uvicorn.run(
        "gate.server:app_from_env",
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        log_config=None,
        access_log=settings.server.access_log,
        timeout_graceful_shutdown=settings.server.graceful_timeout_s,
    )


@app.command()
def health(
    url: Annotated[str, typer.Option(help="Base URL of the sidecar.")] = "http://127.0.0.1:8080",
    wait: Annotated[float, typer.Option(min=0, help="Keep trying for this many seconds.")] = 0.0,
) -> None:
    """Exit 0 when the sidecar's /readyz says ready, 1 otherwise (for health checks and start-up)."""
    import time

    import httpx

    deadline = time.monotonic() + wait
    while True:
        try:
            r = httpx.get(f"{url.rstrip('/')}/readyz", timeout=2.0)
            if r.status_code == 200:
                typer.echo("ready")
                return
            reason = f"not ready: {r.text[:200]}"
        except httpx.HTTPError as exc:
            reason = f"unreachable: {type(exc).__name__}"
        if time.monotonic() >= deadline:
            typer.echo(f"{url} {reason}", err=True)
            raise typer.Exit(1)
        time.sleep(0.5)


def _read_requests(path: Path) -> list[CheckRequest]:
    """All requests of a JSONL file (or standard input for '-'), validated before any is checked; one JSON
    request object spread over several lines, or a JSON array of them, is read too."""
    if str(path) == "-":
        try:  # bytes, decoded strictly: the text layer would smuggle bad bytes in as surrogates
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("standard input is not UTF-8 text") from None
        source, hint = "standard input", f": {NO_REQUEST}"
    else:
        text, source, hint = read_text(path, what=""), str(path), ""
    requests = parse_requests(text, source, CheckRequest)
    if not requests:
        raise UsageError(f"{source} holds no requests{hint}")
    return requests
