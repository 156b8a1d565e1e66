"""The admin API (FastAPI), served by ``tiyi run`` when the configuration has an ``[api]`` section.

Every endpoint except ``/api/v1/health`` needs a bearer token (``tiyi api token add NAME``; the file keeps
only hashes). Devices appear under their pseudonymous ids only: a Bluetooth address may be sent *in* (to pair
a device) but never comes back out. Journal reads run on the journal's own thread, like every stage's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from edge.record import Record
from gateway.api_tokens import TokenError, TokenStore
from gateway.clock import monotonic
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.prometheus import CONTENT_TYPE, scrape
from gateway.proofs import NotInBatch, proof_for_seq
from gateway.registry import DeviceRegistry, RegistryError, pseudonym
from gateway.service import Gateway

log = logging.getLogger("tiyi.api")

PREFIX = "/api/v1"
_SECRET_KEY = re.compile(r"password|secret|token|private", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
Check = Literal["ok", "down", "not configured"]
# Module level: with postponed annotations FastAPI resolves ``Depends(BEARER)`` from the module's globals.
BEARER = HTTPBearer(auto_error=False, description="a token made with `tiyi api token add NAME`")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    broker: Check
    chain: Check
    journal: Check
    radio: Check


class Reading(BaseModel):
    seq: int
    t: int = Field(description="gateway receive time, ms since the epoch")
    kind: str | None = None
    val: dict[str, Any] = Field(default_factory=dict)


class Device(BaseModel):
    id: str = Field(description="pseudonymous device id (never an address)")
    paired: bool
    state: Literal["connected", "seen", "paired"]
    records: int
    battery: int | None = None
    rssi: int | None = None
    last_reading: Reading | None = None


# The registry's allow entries (gateway.registry.normalise), as the OpenAPI document states them; a name may
# not end in whitespace (the registry strips it), which Python's str.strip also finds in \x1c-\x1f.
ENTRY_PATTERN = (
    r"^(([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}|name:.{0,58}[^\s\x1c-\x1f]|irk:[0-9A-Fa-f]{32}|vendor:0x[0-9A-Fa-f]{1,4})$"
)


class PairRequest(BaseModel):
    entry: str = Field(
        max_length=80,
        pattern=ENTRY_PATTERN,
        description="AA:BB:CC:DD:EE:FF, name:<advertised name>, irk:<32 hex digits> or vendor:0x<company id>",
    )
    model: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=200)


class Paired(BaseModel):
    id: str = Field(description="pseudonymous id, or the entry itself for name: and vendor: entries")


class Anchor(BaseModel):
    target: str
    state: str
    tx: str | None = None
    block: int | None = None


class Batch(BaseModel):
    batch: int
    first_seq: int
    last_seq: int
    root: str
    published: bool
    anchor: Anchor | None
    proof: str = Field(description="URL of the proof bundle of the batch's first record")


class Problem(BaseModel):
    detail: str


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    503: {"model": Problem, "description": "the token file cannot be read"},
}


class ApiState:
    """What the endpoints read; the token store is re-read when its file changes."""

    def __init__(
        self,
        gateway: Gateway,
        tokens: Path,
        registry: DeviceRegistry,
        pseudonym_key: bytes | None,
        radio: Callable[[], Check],
    ) -> None:
        self.gateway, self.cfg = gateway, gateway.cfg
        self.tokens_path = tokens
        self.tokens: TokenStore | None = None
        self.registry, self.pseudonym_key, self.radio = registry, pseudonym_key, radio
        self.public_key_pem = gateway.signer.public_key_pem()

    def authenticate(self, presented: str) -> str | None:
        try:
            self.tokens = TokenStore.load(self.tokens_path) if self.tokens is None else self.tokens.fresh()
        except TokenError as exc:
            log.error("%s", exc)
            raise HTTPException(503, "the API token file cannot be read; see the gateway's log") from None
        return self.tokens.check(presented)

    def paired_ids(self) -> dict[str, str]:
        """Pseudonymous id (or name:/vendor: entry) → registry entry, for every paired device."""
        out = {}
        for p in self.registry.paired():
            if p.entry.startswith(("name:", "vendor:")):
                out[p.entry] = p.entry
            elif self.pseudonym_key is not None:
                out[pseudonym(self.pseudonym_key, p.entry)] = p.entry
        return out


def create_app(state: ApiState) -> FastAPI:
    app = FastAPI(
        title="tiyi gateway admin API",
        version="1",
        description="Health, devices, batches, proofs and metrics of one tiyi-edge gateway.",
    )

    def authorized(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> str:
        if creds is None:
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        name = state.authenticate(creds.credentials)
        if name is None:
            raise HTTPException(401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"})
        return name

    auth = [Depends(authorized)]
    _health_routes(app, state, auth)
    _device_routes(app, state, auth)
    _batch_routes(app, state, auth)
    from gateway.api_audiences import audience_routes

    audience_routes(app, state, auth, PREFIX, _AUTH_ERRORS)
    from gateway.web import mount

    mount(app, state, auth, PREFIX)
    return app


def _health_routes(app: FastAPI, state: ApiState, auth: list[Any]) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.get(f"{PREFIX}/health", response_model=Health, tags=["health"])
    async def health() -> Health:
        """Liveness: the process answers. The only endpoint without a token."""
        return Health()

    @app.get(
        f"{PREFIX}/ready",
        response_model=Readiness,
        dependencies=auth,
        responses={**_AUTH_ERRORS, 503: {"model": Readiness, "description": "not ready"}},
        tags=["health"],
    )
    async def ready() -> JSONResponse:
        r = await readiness(state)
        return JSONResponse(r.model_dump(), status_code=200 if r.ready else 503)


def _device_routes(app: FastAPI, state: ApiState, auth: list[Any]) -> None:
    @app.get(f"{PREFIX}/devices", response_model=list[Device], dependencies=auth, responses=_AUTH_ERRORS)
    async def devices() -> list[Device]:
        return list_devices(state)

    @app.post(
        f"{PREFIX}/devices",
        response_model=Paired,
        status_code=201,
        dependencies=auth,
        responses={**_AUTH_ERRORS, 422: {"model": Problem}},
    )
    async def pair(req: PairRequest) -> Paired:
        """Pair (allow) a device; the gateway's radio picks it up within seconds."""
        try:
            p = state.registry.pair(req.entry, req.model, req.note)
        except RegistryError as exc:
            raise HTTPException(422, str(exc)) from None
        if p.entry.startswith(("name:", "vendor:")) or state.pseudonym_key is None:
            return Paired(id=p.entry if p.entry.startswith(("name:", "vendor:")) else "")
        return Paired(id=pseudonym(state.pseudonym_key, p.entry))

    @app.delete(
        f"{PREFIX}/devices/{{device_id}}",
        status_code=204,
        dependencies=auth,
        responses={**_AUTH_ERRORS, 404: {"model": Problem}},
    )
    async def forget(device_id: Annotated[str, PathParam(max_length=80)]) -> Response:
        """Forget a paired device by its id; records already journaled stay."""
        entry = state.paired_ids().get(device_id)
        if entry is None or not state.registry.forget(entry):
            raise HTTPException(404, f"no paired device {device_id}")
        return Response(status_code=204)


def _batch_routes(app: FastAPI, state: ApiState, auth: list[Any]) -> None:
    @app.get(f"{PREFIX}/batches", response_model=list[Batch], dependencies=auth, responses=_AUTH_ERRORS)
    async def batches(
        limit: Annotated[int, Query(ge=1, le=500)] = 20,
        before: Annotated[int | None, Query(ge=1, le=1 << 62)] = None,
    ) -> list[Batch]:
        """Newest first; ``before`` pages back."""
        rows = await state.gateway.worker.call(state.gateway.journal.batches.batch_page, before, limit)
        target = state.cfg.chain_target
        return [
            Batch(
                batch=b.batch,
                first_seq=b.first_seq,
                last_seq=b.last_seq,
                root=b.root.hex(),
                published=b.published,
                anchor=None
                if b.anchor_state is None
                else Anchor(
                    target=target,
                    state=b.anchor_state,
                    tx=None if b.tx_hash is None else "0x" + b.tx_hash.hex(),
                    block=b.block_number,
                ),
                proof=f"{PREFIX}/proofs/{b.first_seq}",
            )
            for b in rows
        ]

    @app.get(
        f"{PREFIX}/proofs/{{seq}}",
        dependencies=auth,
        responses={
            **_AUTH_ERRORS,
            200: {"description": "the proof bundle (as `tiyi proof export`)"},
            404: {"model": Problem},
        },
    )
    async def proof(seq: Annotated[int, PathParam(ge=1, le=1 << 62)]) -> JSONResponse:
        gw = state.gateway
        try:
            p = await gw.worker.call(proof_for_seq, state.cfg, gw.journal, seq, lambda: state.public_key_pem)
        except NotInBatch as exc:
            raise HTTPException(404, str(exc)) from None
        return JSONResponse(p.bundle)

    @app.get(f"{PREFIX}/config", dependencies=auth, responses=_AUTH_ERRORS)
    async def config() -> dict[str, Any]:
        """The running configuration, with secrets (and credentials in URLs) redacted."""
        return redacted(state.cfg)

    @app.get(
        "/metrics",
        dependencies=auth,
        response_class=Response,
        responses={**_AUTH_ERRORS, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def metrics() -> Response:
        return Response(await scrape(state.gateway), media_type=CONTENT_TYPE)


async def readiness(state: ApiState) -> Readiness:
    gw = state.gateway
    journal: Check = "ok"
    try:
        await gw.worker.call(gw.journal.stats)
    except (GatewayError, OSError):
        journal = "down"
    targets = gw.anchoring.targets
    now = monotonic()
    chain: Check = "not configured" if not targets else "down" if any(t.retry_at > now for t in targets) else "ok"
    broker: Check = "ok" if gw.publisher.connected else "down"
    radio = state.radio()
    return Readiness(
        ready=all(c != "down" for c in (journal, chain, broker, radio)),
        broker=broker,
        chain=chain,
        journal=journal,
        radio=radio,
    )


def list_devices(state: ApiState) -> list[Device]:
    h = state.gateway.health
    live = state.gateway.devices.device_states()
    paired = state.paired_ids()
    out = []
    for dev in sorted(set(live) | set(h.device_records) | set(paired)):
        s = live.get(dev, {})
        last = h.device_last.get(dev)
        out.append(
            Device(
                id=dev,
                paired=dev in paired,
                state="connected"
                if s.get("connected")
                else "seen"
                if dev in live or dev in h.device_records
                else "paired",
                records=h.device_records.get(dev, 0),
                battery=s.get("battery"),
                rssi=s.get("rssi"),
                last_reading=None if last is None else _reading(*last),
            )
        )
    return out


def _reading(seq: int, t: int, data: bytes) -> Reading:
    """The reading a record holds; a record this version cannot read shows its seq and time only."""
    with contextlib.suppress(Exception):
        r = Record.from_bytes(data)
        return Reading(seq=seq, t=t, kind=r.kind, val=dict(r.val))
    return Reading(seq=seq, t=t)


def redacted(cfg: GatewayConfig) -> dict[str, Any]:
    out: dict[str, Any] = _redact(dataclasses.asdict(cfg))
    return out


def _redact(v: Any, key: str = "") -> Any:
    if key == "allow":  # addresses and IRKs never leave the gateway; names and brands may
        return sorted(e if e.startswith(("name:", "vendor:")) else "***" for e in v)
    if isinstance(v, dict):
        return {k: _redact(x, k) for k, x in v.items()}
    if isinstance(v, list | tuple | frozenset | set):
        return [_redact(x) for x in sorted(v, key=str)] if isinstance(v, frozenset | set) else [_redact(x) for x in v]
    if v is not None and _SECRET_KEY.search(key) and not key.endswith("_file"):
        return "***"
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, str):
        return _URL_USERINFO.sub("***@", v)
    return v


def api_server(
    state: ApiState, listen: str, port: int, cert_file: Path | None = None, key_file: Path | None = None
) -> Any:
    """A uvicorn server for the app, to run in the gateway's own loop (``await server.serve()``); HTTPS with
    ``cert_file`` and ``key_file`` (checked beforehand by ``gateway.api_tls.check_api_tls``)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(state),
        host=listen,
        port=port,
        ssl_certfile=None if cert_file is None else str(cert_file),
        ssl_keyfile=None if key_file is None else str(key_file),
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)
