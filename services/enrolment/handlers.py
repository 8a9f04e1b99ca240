"""Events the enrolment service consumes: none.

Enrolment is the upstream of every other service: its facts (applications, inspections,
approvals, suspensions) are decided here from commands and published on `placematch.enrolment`.
It reads no other service's events, so it keeps working, and keeps its audit trail, when the
rest of the stack is down.
"""
from __future__ import annotations

from typing import Sequence

from shared.service import ConsumerSpec

CONSUMERS: Sequence[ConsumerSpec] = ()
