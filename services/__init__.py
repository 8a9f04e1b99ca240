"""The services of placematch, and how the operations tools find them.

The core (`shared/`) knows no service: the command line (`services.cli`) and the demo
(`services.demo`) reach a service's parts through `module(service, "app")` and the names here.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

SERVICES = ("enrolment", "referral", "matching", "notification", "placement")
"""The services, in port order: `placematch up` serves SERVICES[i] on base port + i + 1."""


def port_for(service: str, base: int) -> int:
    """The port of `service` when the services listen from `base` (enrolment on base + 1)."""
    return base + SERVICES.index(known(service)) + 1


def known(service: str) -> str:
    if service not in SERVICES:
        raise LookupError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return service


def module(service: str, name: str) -> ModuleType:
    """`services.<service>.<name>`, e.g. module("referral", "audit")."""
    return importlib.import_module(f"services.{known(service)}.{name}")


def create_app(service: str) -> Any:
    """The service's `create_app(settings)`."""
    return module(service, "app").create_app
