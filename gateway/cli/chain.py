"""``tiyi chain …``: the alliance administrator's and gym operators' side of the on-chain gateway registry."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from anchoring.readers import address
from edge.errors import KeyFormatError
from edge.sm2 import load_public_key_pem
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.runtime import chain_account_key

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ChainOptions:
    """``tiyi chain …``, parsed once (see ``gateway.cli.main`` for each option's help); a subcommand leaves the
    options it does not take at their empty defaults."""

    chain_cmd: str
    rpc: str = ""
    contract: str = ""
    account: str = ""
    gateway: str = ""
    pub: Path | None = None
    anchorer: str = ""
    operator_key: Path | None = None
    config: Path | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ChainOptions:
        given = {f.name: v for f in dataclasses.fields(cls) if (v := vars(args).get(f.name)) is not None}
        return cls(**given)

    def need(self, value: _T | None, flag: str) -> _T:
        """An option this subcommand takes (argparse requires it; a caller building options by hand may not)."""
        if value is None:
            raise ConfigError(f"tiyi chain {self.chain_cmd} needs {flag}")
        return value


def _point(path: Path) -> bytes:
    try:
        v = load_public_key_pem(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise ConfigError(f"--pub {path}: {exc.strerror}") from exc
    except (KeyFormatError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--pub {path}: {exc}") from exc
    return v.public_key.point[1:]


def _client(opts: ChainOptions) -> Any:
    """A registry client for ``--rpc``: EVM JSON-RPC, or FISCO BCOS 2.x native RPC for ``fisco2+http(s)://``."""
    contract = address(opts.contract, "--contract")
    if opts.rpc.startswith("fisco2+"):
        from anchoring.fisco2 import Fisco2ChainClient
        from gateway.keys import generate_keypair, load_signer

        url = opts.rpc.removeprefix("fisco2+")
        if opts.chain_cmd == "show":
            return Fisco2ChainClient.reader(url, contract)
        # On a 国密 chain an account is an SM2 key: a directory holding gateway.key (created if absent).
        key_dir = opts.need(opts.operator_key, "--operator-key")
        if not (key_dir / "gateway.key").exists():
            generate_keypair(key_dir)
        return Fisco2ChainClient(url, load_signer(key_dir / "gateway.key"), contract)
    from anchoring.evm import EvmChainClient

    key = (
        secrets.token_bytes(32)
        if opts.chain_cmd == "show"
        else chain_account_key(opts.need(opts.operator_key, "--operator-key"))
    )
    return EvmChainClient.connect(opts.rpc, key, contract=contract)


def account_main(opts: ChainOptions) -> int:
    """Print the account a gateway anchors from (its key is created 0600 if it does not exist yet)."""
    cfg = load_config(opts.need(opts.config, "--config"))
    if cfg.chain.kind == "fisco2":
        from gateway.keys import generate_keypair, load_signer

        key_dir = cfg.chain_key_path.parent / "fisco-account"
        if not (key_dir / "gateway.key").exists():
            generate_keypair(key_dir)
        from edge.sm3 import sm3

        print("0x" + sm3(load_signer(key_dir / "gateway.key").public_key.point[1:])[12:].hex())
        return 0
    from eth_account import Account

    print(Account.from_key(chain_account_key(cfg.chain_key_path)).address)
    return 0


def registry_main(opts: ChainOptions) -> int:
    if opts.chain_cmd == "account":
        return account_main(opts)
    client = _client(opts)
    cmd = opts.chain_cmd
    if cmd == "show":
        return _show(client, opts.gateway)
    if cmd == "approve-operator":
        rec = client.approve_operator(address(opts.account, "--account"))
    elif cmd == "revoke-operator":
        rec = client.revoke_operator(address(opts.account, "--account"))
    elif cmd == "transfer-admin":
        rec = client.transfer_admin(address(opts.account, "--account"))
    elif cmd == "register":
        rec = client.register_gateway(
            opts.gateway, _point(opts.need(opts.pub, "--pub")), address(opts.anchorer, "--anchorer")
        )
    elif cmd == "rotate":
        rec = client.rotate_gateway_key(
            opts.gateway, _point(opts.need(opts.pub, "--pub")), address(opts.anchorer, "--anchorer")
        )
    else:
        rec = client.revoke_gateway(opts.gateway)
    what = opts.account if cmd in ("approve-operator", "revoke-operator", "transfer-admin") else opts.gateway
    print(
        f"{opts.chain_cmd} {what}: done in block {rec.block_number} (tx 0x{rec.tx_hash.hex()}), "
        f"sent by 0x{client.account.hex()}"
    )
    return 0


def _show(client: Any, gw: str) -> int:
    entry = client.gateway(gw)
    if entry is None:
        print(f"{gw}: not registered")
        return 1
    state = f"REVOKED in block {entry.revoked_block}" if entry.revoked else "active"
    print(f"{entry.gw}: {state}, registered by operator 0x{entry.operator.hex()}")
    for p in entry.periods():
        since = "the start" if p.since is None else f"block {p.since}"
        until = "now" if p.until is None else f"block {p.until}"
        print(f"  key 04{p.key.hex()}\n    anchoring account 0x{p.anchorer.hex()}, valid from {since} until {until}")
    return 0
