"""``tiyi chain register|rotate|revoke|show``: an operator's side of the on-chain gateway registry."""

from __future__ import annotations

import argparse
import secrets

from anchoring.errors import AnchoringError
from anchoring.evm import EvmChainClient
from edge.errors import KeyFormatError
from edge.sm2 import load_public_key_pem
from gateway.errors import ConfigError, GatewayError
from gateway.runtime import chain_account_key


def _point(args: argparse.Namespace) -> bytes:
    try:
        v = load_public_key_pem(args.pub.read_text(encoding="ascii"))
    except OSError as exc:
        raise ConfigError(f"--pub {args.pub}: {exc.strerror}") from exc
    except KeyFormatError as exc:
        raise ConfigError(f"--pub {args.pub}: {exc}") from exc
    return v.public_key.point[1:]


def registry_main(args: argparse.Namespace) -> int:
    key = secrets.token_bytes(32) if args.chain_cmd == "show" else chain_account_key(args.operator_key)
    try:
        client = EvmChainClient.connect(args.rpc, key, contract=args.contract)
        if args.chain_cmd == "register":
            rec = client.register_gateway(args.gateway, _point(args))
        elif args.chain_cmd == "rotate":
            rec = client.rotate_gateway_key(args.gateway, _point(args))
        elif args.chain_cmd == "revoke":
            rec = client.revoke_gateway(args.gateway)
        else:
            entry = client.gateway(args.gateway)
            if entry is None:
                print(f"{args.gateway}: not registered")
                return 1
            state = "REVOKED" if entry.revoked else "active"
            print(f"{entry.gw}: {state}, operator {entry.operator}, SM2 key 04{entry.sm2_public_key.hex()}, "
                  f"last changed in block {entry.updated_block}")
            return 0
    except AnchoringError as exc:
        raise GatewayError(str(exc)) from exc
    print(f"{args.chain_cmd} {args.gateway}: done in block {rec.block_number} (tx 0x{rec.tx_hash.hex()}), "
          f"operator {client.account_address}")
    return 0
