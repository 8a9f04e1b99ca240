"""Subprocesses the benchmarks start (services under uvicorn, the load generator) and stop."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import ROOT

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = open(log, "wb")  # noqa: SIM115 - the process's log, open for its lifetime, closed by stop()
        self.proc = subprocess.Popen(list(args), cwd=ROOT, env={**os.environ, **env}, stdout=self._file,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_http(self, port: int, path: str = "/health", timeout: float = 90.0) -> None:
        import httpx

        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"process exited ({self.proc.returncode}); see {self.log}:\n"
                                       + self.log.read_text()[-2000:])
                try:
                    if (await client.get(f"http://127.0.0.1:{port}{path}", timeout=2)).status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f}s; see {self.log}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._file.close()
