"""The bodies the matching API answers with, as models (issue 15), for the OpenAPI document only
(`shared.openapi` attaches `RESPONSES` by operationId); the bodies are built as before."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DECIMAL_2 = r"^\d{1,3}\.\d{2}$"


class PolicyView(BaseModel):
    """The ranking policy in force; `version` is also its ETag."""

    model_config = ConfigDict(extra="forbid")

    version: int
    quality_weight: str = Field(pattern=DECIMAL_2, examples=["0.60"])
    price_weight: str = Field(pattern=DECIMAL_2, examples=["0.40"])
    min_quality: str | None = Field(pattern=DECIMAL_2, examples=["50.00"])


RESPONSES: dict[str, type[BaseModel]] = {"getPolicy": PolicyView, "changePolicy": PolicyView}

ETAGS: set[tuple[str, str]] = {("GET", "/policy"), ("PUT", "/policy")}
"""The policy's ETag is its version; `PUT /policy` with a stale If-Match is 412 (shared.preconditions)."""
