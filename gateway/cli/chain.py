"""``tiyi chain …``: the alliance administrator's and gym operators' side of the on-chain gateway registry."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from edge.errors import KeyFormatError
from edge.sm2 import load_public_key_pem
from gateway.cli.verify import address_arg
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.runtime import chain_account_key


def _point(path: Path) -> bytes:
    try:
        v = load_public_key_pem(path.read_text(encoding="ascii"))
    except OSError as exc:
        raise ConfigError(f"--pub {path}: {exc.strerror}") from exc
    except (KeyFormatError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--pub {path}: {exc}") from exc
    return v.public_key.point[1:]


def _client(args: argparse.Namespace) -> Any:
    """A registry client for ``--rpc``: EVM JSON-RPC, or FISCO BCOS 2.x native RPC for ``fisco2+http(s)://``."""
    contract = address_arg(args.contract, "--contract")
    if args.rpc.startswith("fisco2+"):
        from anchoring.fisco2 import Fisco2ChainClient
        from gateway.keys import generate_keypair, load_signer

        url = args.rpc.removeprefix("fisco2+")
        if args.chain_cmd == "show":
            return Fisco2ChainClient.reader(url, contract)
        # On a 国密 chain an account is an SM2 key: a directory holding gateway.key (created if absent).
        key_dir: Path = args.operator_key
        if not (key_dir / "gateway.key").exists():
            generate_keypair(key_dir)
        return Fisco2ChainClient(url, load_signer(key_dir / "gateway.key"), contract)
    from anchoring.evm import EvmChainClient

    key = secrets.token_bytes(32) if args.chain_cmd == "show" else chain_account_key(args.operator_key)
    return EvmChainClient.connect(args.rpc, key, contract=contract)


def account_main(args: argparse.Namespace) -> int:
    """Print the account a gateway anchors from (its key is created 0600 if it does not exist yet)."""
    cfg = load_config(args.config)
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


def registry_main(args: argparse.Namespace) -> int:
    if args.chain_cmd == "account":
        return account_main(args)
    client = _client(args)
    cmd = args.chain_cmd
    if cmd == "show":
        return _show(client, args.gateway)
    if cmd == "approve-operator":
        rec = client.approve_operator(address_arg(args.account, "--account"))
    elif cmd == "revoke-operator":
        rec = client.revoke_operator(address_arg(args.account, "--account"))
    elif cmd == "transfer-admin":
        rec = client.transfer_admin(address_arg(args.account, "--account"))
    elif cmd == "register":
        rec = client.register_gateway(args.gateway, _point(args.pub), address_arg(args.anchorer, "--anchorer"))
    elif cmd == "rotate":
        rec = client.rotate_gateway_key(args.gateway, _point(args.pub), address_arg(args.anchorer, "--anchorer"))
    else:
        rec = client.revoke_gateway(args.gateway)
    what = args.account if cmd in ("approve-operator", "revoke-operator", "transfer-admin") else args.gateway
    print(
        f"{args.chain_cmd} {what}: done in block {rec.block_number} (tx 0x{rec.tx_hash.hex()}), "
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
