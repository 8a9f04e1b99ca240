"""The API baseline: FastAPI with the same request model and bearer-token check as
`POST /referrals`, answering 201 straight from the parsed body (no store, no bus, no middleware)."""
from __future__ import annotations

import uuid

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from services.referral.api import ReferralIn, borough_only
from shared.auth import Principal
from shared.settings import Settings

app = FastAPI(title="bare")
app.state.settings = Settings()


@app.post("/referrals", status_code=201)
async def raise_referral(body: ReferralIn, who: Principal = Depends(borough_only)) -> JSONResponse:
    referral_id = str(uuid.uuid4())
    view = {"id": referral_id, "status": "open", "borough": who.tenant, **body.model_dump(mode="json", exclude_unset=True)}
    return JSONResponse(view, status_code=201, headers={"Location": f"/referrals/{referral_id}"})
