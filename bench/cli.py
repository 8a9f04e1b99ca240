"""`python -m bench [--only publish,store,api,e2e,replay] [--quick] [--replay-events N]`."""
from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .common import Infra, Row, kafka_version, machine_facts, pg_version

SECTIONS = ("publish", "store", "api", "e2e", "replay")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NOTES_MARKER = "<!-- notes: everything below this line is kept when python -m bench rewrites this file -->"
"""What follows this line in RESULTS.md (before/after figures of a change, profiles, next steps) is
written by hand and carried over into the file a run writes."""


EXPLAINED = """## What each figure is

- **publish**: events/s from `EventStore.append` (1 event per transaction, 8 concurrent writers, outbox
  row in the same transaction, PostgreSQL) through `OutboxRelay` and `KafkaBus` until Kafka acknowledged
  every one, vs raw aiokafka sending the same bytes and keys (idempotent, acks=all, linger_ms=2).
- **store**: one writer appending `referral-raised` CloudEvents (no outbox): single = one event per
  transaction (streams of 10, expected version checked), batched = 50 events of one stream per
  transaction; vs `eventsourcing` `SQLiteApplicationRecorder` / `PostgresApplicationRecorder` on the same
  directory / server, same bytes, SQLite WAL + synchronous=NORMAL on both sides.
- **api**: `POST /referrals` on `placematch serve referral` (PostgreSQL + Kafka) vs `bench/bare_app.py`
  (same pydantic model + JWT check, no store), both under uvicorn in a subprocess, loaded by
  `bench/loadgen.py` in another process (closed loop, 16 keep-alive connections).
- **e2e**: four `placematch serve` processes on Kafka + PostgreSQL; referrals raised open-loop at 10, 50,
  100/s; "in" = referrals accepted / time until the last POST answered; "out" = webhooks received /
  time until the last one; latency = POST sent → first webhook for that referral at the bench's receiver.
  Waves run back to back, so a backlog left by one wave delays the next.
- **replay**: `services.matching.replay.replay_matching` over a synthetic log (real enrolment and
  referral aggregates, matching's decisions recorded by one untimed pass); events/s = all events in
  the three stores / seconds; the run checks every decision is reproduced.

The machine is shared: other engineers' processes may run at the same time, so absolute figures are
noisy; the ratios compare runs made minutes apart under similar load. Check `uptime` when you rerun
(the run recorded here had a load average of about 1-2 on 2 cores; earlier runs saw 10-15).
"""


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def _ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "—"
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for col, justify in (("section", "left"), ("metric", "left"), ("placematch", "right"), ("baseline", "right"),
                         ("unit", "left"), ("ours/baseline", "right"), ("baseline is", "left"), ("note", "left")):
        t.add_column(col, justify=justify, overflow="fold")
    for r in rows:
        t.add_row(r.section, r.metric, _fmt(r.ours, r.unit), _fmt(r.baseline, r.unit), r.unit, _ratio(r),
                  r.baseline_name, r.note)
    return t


def markdown(rows: list[Row], facts: dict[str, str], command: str, started: datetime, seconds: float) -> str:
    lines = ["# placematch benchmark results", "",
             f"Made by `{command}` on {started:%Y-%m-%d %H:%M} UTC ({seconds:.0f} s).", "",
             "Ratio = placematch / baseline, both measured in the same run on the same machine "
             "(for latencies a ratio above 1 means placematch is slower).", "",
             "## Machine", "", "| fact | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Results", "",
              "| section | metric | placematch | baseline | unit | ours/baseline | baseline is | note |",
              "| --- | --- | ---: | ---: | --- | ---: | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.section} | {r.metric} | {_fmt(r.ours, r.unit)} | {_fmt(r.baseline, r.unit)} | {r.unit} "
                     f"| {_ratio(r)} | {r.baseline_name} | {r.note} |")
    return "\n".join(lines + ["", EXPLAINED]) + "\n"


async def _facts(infra: Infra) -> dict[str, str]:
    facts = machine_facts(infra)
    facts["kafka"] = kafka_version() if infra.kafka else "not available"
    facts["postgresql"] = await pg_version(infra.database_url) if infra.database_url else "not available"
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated: " + ",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--replay-events", type=int, default=1_000_000, help="size of the replay log")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # receiver connections cut at shutdown
    console = Console(width=max(160, Console().width))
    infra = Infra.from_env()
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    facts = asyncio.run(_facts(infra))
    facts["mode"] = "quick" if args.quick else "full"
    rows: list[Row] = []
    for section in SECTIONS:
        if section not in only:
            continue
        console.print(f"[bold]running {section}…[/]")
        module: Any = __import__(f"bench.{section}", fromlist=["run"])
        s0 = time.perf_counter()
        kwargs = {"replay_events": args.replay_events} if section == "replay" else {}
        try:
            got = asyncio.run(module.run(infra, args.quick, **kwargs))
        except Exception as exc:  # one broken section must not hide the others
            console.print_exception()
            got = [Row(section, "failed", None, note=f"{type(exc).__name__}: {exc}"[:200])]
        rows += got
        console.print(table(got, f"{section} ({time.perf_counter() - s0:.0f} s)"))
    facts_table = Table(title="machine")
    facts_table.add_column("fact")
    facts_table.add_column("value")
    for k, v in facts.items():
        facts_table.add_row(k, v)
    console.print(facts_table)
    console.print(table(rows, "placematch vs baselines"))
    if not args.no_write:
        given = " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        command = (f"make bench BENCH_ARGS={shlex.quote(given)}" if given else "make bench") \
            if "MAKELEVEL" in __import__("os").environ else f"deploy/test-env.sh .venv/bin/python -m bench {given}"
        old = RESULTS.read_text() if RESULTS.exists() else ""
        notes = old[old.index(NOTES_MARKER):] if NOTES_MARKER in old else NOTES_MARKER + "\n"
        RESULTS.write_text(markdown(rows, facts, command.strip(), started, time.perf_counter() - t0) + "\n" + notes)
        console.print(f"wrote {RESULTS}")
