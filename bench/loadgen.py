"""Load generator run as a separate process: `python -m bench.loadgen CONFIG.json`.

Closed loop: CONNECTIONS keep-alive HTTP/1.1 connections, each sending the next request as soon
as the previous answer arrived. A minimal asyncio client (no httpx) so that the generator costs
as little CPU as possible on a small machine. Prints one JSON line: counts and latencies (ms).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _connection(host: str, port: int, requests: list[bytes], state: dict[str, Any], index: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = index
    try:
        while not state["stop"]:
            request = requests[n % len(requests)]
            n += state["connections"]
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            if state["measuring"]:
                if 200 <= status < 300:
                    state["latencies"].append(elapsed)
                else:
                    state["errors"] += 1
                    state["statuses"][status] = state["statuses"].get(status, 0) + 1
    finally:
        writer.close()


async def main(config: dict[str, Any]) -> dict[str, Any]:
    host, port, path = config["host"], config["port"], config["path"]
    requests = []
    for item in config["requests"]:
        body = json.dumps(item["body"]).encode()
        requests.append(
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\nauthorization: Bearer {item['token']}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    state: dict[str, Any] = {"stop": False, "measuring": False, "latencies": [], "errors": 0, "statuses": {},
                             "connections": config["connections"]}
    tasks = [asyncio.create_task(_connection(host, port, requests, state, i)) for i in range(config["connections"])]
    await asyncio.sleep(config["warmup"])
    state["measuring"] = True
    started = time.perf_counter()
    await asyncio.sleep(config["duration"])
    state["measuring"] = False
    seconds = time.perf_counter() - started
    state["stop"] = True
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            state["statuses"]["exception"] = repr(task.exception())
    lat = sorted(state["latencies"])

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None

    return {"ok": len(lat), "errors": state["errors"], "statuses": state["statuses"], "seconds": seconds,
            "rps": len(lat) / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    print(json.dumps(asyncio.run(main(cfg))))
