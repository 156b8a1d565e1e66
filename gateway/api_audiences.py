"""``GET /api/v1/audiences``: each audience's configuration and how far its views got (read only).

Names of platforms, purposes and counts: never a member, a device or a reading. The journal is read on its
own thread, in one call, like every other endpoint's journal reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from gateway.journal import AudienceProgress

if TYPE_CHECKING:
    from gateway.api import ApiState


class AudienceStatus(BaseModel):
    id: str
    purpose: str
    jurisdiction: str
    legal_basis: str = Field(description='"" when none is configured')
    encrypt: bool
    unbound: bool = Field(description="whether records of unbound devices may go to it")
    first_batch: int = Field(description="the first source batch it gets a view of")
    views: int = Field(description="views built and journaled")
    views_unpublished: int = Field(description="views whose manifest the broker has not acknowledged yet")
    consent_published: int = Field(description="consent ledger number up to which its events were acknowledged")
    view_records: int = Field(description="view records built since the gateway started")
    withheld: dict[str, int] = Field(description="source records withheld since the gateway started, by reason")


def audience_routes(app: FastAPI, state: ApiState, auth: list[Any], prefix: str, errors: dict[Any, Any]) -> None:
    @app.get(f"{prefix}/audiences", response_model=list[AudienceStatus], dependencies=auth, responses=errors)
    async def audiences() -> list[AudienceStatus]:
        """Each configured audience and its views' progress (docs/privacy.md)."""
        gw = state.gateway
        ids = [(a.id, a.purpose) for a in state.cfg.audiences]
        progress: dict[str, AudienceProgress] = {p.aud: p for p in await gw.worker.call(gw.journal.views.progress, ids)}
        stage = gw.audiences
        out = []
        for a in state.cfg.audiences:
            p = progress[a.id]
            withheld = {} if stage is None else {r: n for (aud, r), n in sorted(stage.withheld.items()) if aud == a.id}
            out.append(
                AudienceStatus(
                    id=a.id,
                    purpose=a.purpose,
                    jurisdiction=a.jurisdiction,
                    legal_basis=a.legal_basis,
                    encrypt=a.encrypt,
                    unbound=a.unbound,
                    first_batch=p.first_n,
                    views=p.views,
                    views_unpublished=p.unpublished,
                    consent_published=p.consent_published,
                    view_records=0 if stage is None else stage.view_records[a.id],
                    withheld=withheld,
                )
            )
        return out
