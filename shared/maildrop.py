"""A local SMTP server for `placematch up`: every email is written to <data-dir>/mail/*.eml.

So that a laptop run shows the alerts providers would get, without a mail server to set up.
"""
from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from shared.events import format_time, now_utc


class MailDrop:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count(1)

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        stamp = format_time(now_utc()).replace(":", "").replace(".", "-")
        path = self.directory / f"{stamp}-{next(self._numbers):05d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start_maildrop(directory: Path, host: str = "127.0.0.1") -> Controller:
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    controller = Controller(MailDrop(directory), hostname=host, port=port)
    controller.start()
    return controller
