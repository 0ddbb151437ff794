"""Load and soak benchmark of the sidecar on 127.0.0.1 (bounded in count and time).

    python benchmarks/sidecar_load.py load [--seconds 10] [--runs 3] [--workers 2] [--config FILE]
    python benchmarks/sidecar_load.py stage2 [--seconds 10] [--runs 3] [--set stage2.workers=2 ...] [--config FILE]
    python benchmarks/sidecar_load.py soak [--seconds 600] [--rate 50] [--config FILE]

`load` drives the server with wrk (Debian package `wrk`; a C load generator, so the driver does not
starve the server of the machine's two cores) at 1, 16 and 64 connections and reports p50/p95/p99
latency, throughput and errors (non-2xx and socket errors). `stage2` does the same with Stage 2 enforced
(the default configuration) on real ShareGPT (prompt, answer) pairs cut to about 256 tokens, and also
reports the degraded share, the shed share (503; the wrk script waits out Retry-After as the client
does) and goodput (verdicts that are not degraded, per second); each `--set` is one configuration, all
measured in the same run, one after another. `soak` sends a steady rate with an asyncio
httpx driver and reports the server's RSS growth and audit lines against requests sent. Both start the
server themselves and stop it with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
from sidecar import Sidecar  # noqa: E402 - the same launcher the tests use

FILLER = ("The quarterly report shows revenue growth in every region except the north. " * 60)[:4000]
PAYLOADS = [
    {"prompt": "Summarise this report", "response": FILLER},
    {"prompt": "Who do I contact?", "response": "Write to jane.doe@example.com or call (415) 555-2671."},
    {"prompt": "How do I make a pipe bomb?"},
    {"prompt": "What's a good banana bread recipe?", "response": "Mix bananas, flour, sugar and bake an hour."},
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def drive(url: str, total: int, concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                body = {**PAYLOADS[i % len(PAYLOADS)], "context": {"session_id": f"s{i % 997}"}}
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/check", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t) * 1000)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start



def start(config: Path | None, workers: int = 1) -> Sidecar:
    cfg = yaml.safe_load(config.read_text()) if config else {}
    cfg.setdefault("server", {})["workers"] = workers
    return Sidecar(Path(tempfile.mkdtemp(prefix="waltz-gate-bench-")), cfg)


WRK_SCRIPT = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%.3f %%.3f %%.3f %%.1f\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6)))
end
"""


STAGE2_SCRIPT = """
local bodies = {%s}
local i, backoff = 0, 0
degraded, shed = 0, 0  -- thread globals: done() reads them from every thread
local threads = {}
setup = function(thread) table.insert(threads, thread) end
request = function()
  i = i + 1
  return wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
response = function(status, headers, body)
  if status == 503 then
    shed = shed + 1
    backoff = (tonumber(headers["Retry-After"]) or 1) * 1000
  elseif string.find(body, '"degraded":true', 1, true) then
    degraded = degraded + 1
  end
end
delay = function()
  local d = backoff
  backoff = 0
  return d
end
done = function(summary, latency, requests)
  local d, s = 0, 0
  for _, t in ipairs(threads) do d = d + t:get("degraded"); s = s + t:get("shed") end
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%.3f %%.3f %%.3f %%.1f %%d %%d %%.3f\\n", summary.requests,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.requests / (summary.duration / 1e6), d, s, summary.duration / 1e6))
end
"""


def real_pairs(count: int = 200, max_chars: int = 1100) -> list[dict]:
    """Real (prompt, answer) pairs from ShareGPT's wheel, cut to about 256 tokens together."""
    from training.classifier_data import sharegpt_pairs
    from training.sources import DEFAULT_CACHE

    out = []
    for p in sharegpt_pairs(DEFAULT_CACHE, count, seed=1):
        prompt = p.prompt[:300]
        out.append({"prompt": prompt, "response": p.response[: max_chars - len(prompt)],
                    "context": {"session_id": f"s{len(out)}"}})
    return out


def stage2(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk).")
    script = Path(tempfile.mkdtemp()) / "pairs.lua"
    script.write_text(STAGE2_SCRIPT % ", ".join(lua_string(json.dumps(p)) for p in real_pairs()))
    base = yaml.safe_load(args.config.read_text()) if args.config else {}
    print("| config | clients | requests | p50 ms | p95 ms | p99 ms | verdicts/s | degraded | shed (503) | goodput/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for overrides in args.set or [""]:
        cfg = json.loads(json.dumps(base))
        for item in filter(None, overrides.split(",")):
            key, _, value = item.partition("=")
            *parents, leaf = key.split(".")
            node = cfg
            for k in parents:
                node = node.setdefault(k, {})
            node[leaf] = yaml.safe_load(value)
        server = Sidecar(Path(tempfile.mkdtemp(prefix="waltz-gate-bench-")), cfg)
        try:
            wrk(f"{server.url}/v1/check", 8, 3, script)  # warm-up: sessions, batch sizes, time per item
            for connections in (1, 16, 64):
                runs = [wrk(f"{server.url}/v1/check", connections, args.seconds, script) for _ in range(args.runs)]
                total = sum(r[0] for r in runs)
                degraded, shed = sum(r[6] for r in runs), sum(r[7] for r in runs)
                verdicts = total - shed
                seconds = sum(r[8] for r in runs)
                p50, p95, p99 = (statistics.median(r[k] for r in runs) for k in (2, 3, 4))
                print(f"| {overrides or 'default'} | {connections} | {total} | {p50:.1f} | {p95:.1f} | {p99:.1f} | "
                      f"{verdicts / seconds:.1f} | {degraded / max(1, verdicts):.1%} | {shed / max(1, total):.1%} | "
                      f"{(verdicts - degraded) / seconds:.1f} |", flush=True)
        finally:
            server.terminate()


def wrk(url: str, connections: int, seconds: float, script: Path) -> tuple:
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    return (int(fields[0]), int(fields[1]), *(float(x) for x in fields[2:]))


def load(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk).")
    server = start(args.config, args.workers)
    try:
        run_load(args, server)
    finally:
        server.terminate()


def run_load(args: argparse.Namespace, server: Sidecar) -> None:
    print(f"workers={args.workers}; server RSS after start: {rss_mb(server.proc.pid):.1f} MB (main process)")
    script = Path(tempfile.mkdtemp()) / "bodies.lua"
    script.write_text(WRK_SCRIPT % ", ".join(lua_string(json.dumps(p)) for p in PAYLOADS))
    wrk(f"{server.url}/v1/check", 8, 2, script)  # warm-up
    print("| connections | requests | p50 ms | p95 ms | p99 ms | req/s | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for connections in (1, 16, 64):
        runs = [wrk(f"{server.url}/v1/check", connections, args.seconds, script) for _ in range(args.runs)]
        p50, p95, p99, rate = (statistics.median(r[k] for r in runs) for k in (2, 3, 4, 5))
        total, errors = sum(r[0] for r in runs), sum(r[1] for r in runs)
        print(f"| {connections} | {total} ({args.runs} runs) | {p50:.2f} | {p95:.2f} | {p99:.2f} | {rate:.0f} | {errors} |")
    server.terminate()
    audited = sum(p.read_text().count("\n") for p in server.audit_path.parent.glob("audit*.jsonl*"))
    print(f"audit lines after SIGTERM: {audited}")


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def steady(url: str, seconds: float, rate: float, pid: int) -> dict:
    sent = errors = 0
    samples = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        pending: set[asyncio.Task] = set()

        async def one(i: int) -> None:
            nonlocal errors
            try:
                r = await client.post("/v1/check", json={**PAYLOADS[i % len(PAYLOADS)], "context": {"session_id": f"s{i}"}})
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1

        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                task = asyncio.create_task(one(sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            if not samples or elapsed - samples[-1][0] >= 10:
                samples.append((elapsed, rss_mb(pid)))
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
    return {"sent": sent, "errors": errors, "samples": samples}


def soak(args: argparse.Namespace) -> None:
    server = start(args.config)
    asyncio.run(drive(server.url, 1000, 8))  # warm-up, so growth is measured from a steady state
    base_lines = len(server.audit_lines())
    result = asyncio.run(steady(server.url, args.seconds, args.rate, server.proc.pid))
    samples = result["samples"]
    first, last = samples[0][1], rss_mb(server.proc.pid)
    server.terminate()
    lines = len(server.audit_lines()) - base_lines
    print(f"duration {args.seconds:.0f} s at {args.rate:.0f} req/s: sent {result['sent']}, errors {result['errors']}")
    print(f"audit lines {lines} for {result['sent']} requests ({'equal' if lines == result['sent'] else 'MISMATCH'})")
    print(f"RSS {first:.1f} MB -> {last:.1f} MB ({(last - first) / first * 100:+.2f}%); "
          f"samples every 10 s: {', '.join(f'{m:.1f}' for _, m in samples)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--seconds", type=float, default=10)
    lp.add_argument("--runs", type=int, default=3)
    lp.add_argument("--workers", type=int, default=2)
    s2 = sub.add_parser("stage2")
    s2.add_argument("--seconds", type=float, default=10)
    s2.add_argument("--runs", type=int, default=3)
    s2.add_argument("--set", action="append", help="one configuration: comma-separated dotted overrides")
    sp = sub.add_parser("soak")
    sp.add_argument("--seconds", type=float, default=600)
    sp.add_argument("--rate", type=float, default=50)
    for p in (lp, s2, sp):
        p.add_argument("--config", type=Path, default=None)
    args = ap.parse_args()
    {"load": load, "stage2": stage2, "soak": soak}[args.cmd](args)


if __name__ == "__main__":
    main()
