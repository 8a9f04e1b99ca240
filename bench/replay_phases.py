"""Phases of the replay, on a kept log (for profiling; not part of `python -m bench`).

    python -m bench.replay_phases make DIR REFERRALS   # generate a log and record it with the live reactions
    python -m bench.replay_phases time DIR [1,2]        # read the stores, then fold with 1 and 2 workers
"""
from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

from services.matching.replay import fold_matching, inputs_from_stores, rebuild_matching

from .replay import generate


async def make(data_dir: Path, referrals: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    await generate(data_dir, referrals)
    started = time.perf_counter()
    report = await rebuild_matching(data_dir, data_dir / "recorded.db")
    print(f"rebuild: {time.perf_counter() - started:.1f} s, {report.inputs} inputs")
    (data_dir / "matching.db").unlink()
    shutil.move(data_dir / "recorded.db", data_dir / "matching.db")


def phases(data_dir: Path, workers: list[int]) -> None:
    started = time.perf_counter()
    source = asyncio.run(inputs_from_stores(data_dir))
    print(f"read: {time.perf_counter() - started:.2f} s, {len(source.order)} inputs, "
          f"{sum(map(len, source.recorded.values()))} decisions")
    for w in workers:
        started = time.perf_counter()
        report = fold_matching(source, workers=w)
        print(f"fold workers={w}: {time.perf_counter() - started:.2f} s ok={report.ok} inputs={report.inputs}")


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    if mode == "make":
        asyncio.run(make(where, int(sys.argv[3])))
    else:
        phases(where, [int(w) for w in (sys.argv[3] if len(sys.argv) > 3 else "1,2").split(",")])
