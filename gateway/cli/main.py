"""The ``tiyi`` command: run a gateway, the demo, verification, keys and decoding tools.

Heavy imports happen inside each command so ``tiyi --help`` is instant on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2  # also: a broker or chain node that cannot be reached (nothing was checked or done)

_EPILOG = """\
examples:
  tiyi demo                                   simulated straps -> gateway -> embedded broker -> in-process chain
  tiyi demo --devices 20 --duration 60        a bigger, bounded demo
  tiyi demo --broker mqtt://127.0.0.1:1883    use a broker that already runs
  tiyi keys generate --dir /var/lib/tiyi/keys write the gateway's SM2 key pair (0600)
  tiyi run --config /etc/tiyi/gateway.toml    run a gateway as a service
  tiyi verify --broker mqtt://HOST:1883 --rpc http://HOST:8545
                                              independently check everything a gateway publishes
  tiyi proof export --config gateway.toml --seq 42 -o proof.json
  tiyi verify --bundle proof.json --key gateway.pub --rpc http://HOST:8545
  tiyi decode 2a37 16 48 00 04                decode one BLE payload to JSON
"""


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole path with simulated devices and verify it",
        description="Start an embedded MQTT broker (unless --broker is given), an in-process EVM chain with the "
        "Anchor contract, N simulated heart-rate straps and a gateway; show live progress; on Ctrl-C or "
        "after --duration, drain, stop and verify every record independently (records, Merkle proofs, "
        "SM2 signatures, the batch chain and the anchors on the chain).",
    )
    p.add_argument("--devices", type=int, default=5, help="number of simulated straps (default 5)")
    _add_run_options(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--broker", default=None, help="use this broker (mqtt://host:port) instead of the embedded one")
    p.add_argument(
        "--region",
        default="shenzhen",
        help="regional sub-chain and topic region: hongkong, macao or a Guangdong city (default shenzhen)",
    )
    p.add_argument("--gateway-id", default="gw-demo-01", help="gateway id (default gw-demo-01)")
    p.add_argument("--state-dir", type=Path, default=None, help="journal and keys (default: a temporary directory)")
    p.add_argument("--batch-records", type=int, default=200, help="close a batch at this many records (default 200)")
    p.add_argument("--batch-seconds", type=float, default=5.0, help="or after this many seconds (default 5)")
    p.add_argument("--speed", type=float, default=1.0, help="run device time this many times faster (default 1)")
    p.add_argument(
        "--chain",
        default=None,
        metavar="URL",
        help="anchor on this EVM JSON-RPC node (ganache, FISCO BCOS Web3 RPC, Besu) instead of the "
        "in-process chain; the Anchor contract is deployed unless --contract is given",
    )
    p.add_argument("--contract", default=None, help="address of an existing Anchor contract on --chain")
    p.add_argument(
        "--rollup-every",
        type=float,
        default=10.0,
        metavar="S",
        help="also anchor a roll-up of the batch roots every S seconds on a second in-process chain, "
        "as a supervision chain would get (default 10; 0: none)",
    )
    p.add_argument(
        "--ble",
        action="store_true",
        help="emulate the straps as Bluetooth peripherals (Bumble) and collect them through the gateway's "
        "real bleak code path, instead of feeding frames directly",
    )
    p.add_argument(
        "--hub",
        choices=["tcp", "ws"],
        default=None,
        help="with --ble: run the devices in separate processes that attach to this process's emulated "
        "radio over TCP or WebSocket HCI transports (a hub), instead of all in one process",
    )
    p.add_argument("--processes", type=int, default=2, help="with --hub: device processes to start (default 2)")


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run a gateway from a configuration file",
        description="Run the gateway service. Stops cleanly on SIGTERM/SIGINT, finishing accepted "
        "work first (bounded by --drain-timeout). See deploy/gateway.example.toml.",
    )
    p.add_argument("--config", type=Path, required=True, help="TOML configuration file")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish work on stop (default 30)")


_VERIFY_EPILOG = """\
trust (exactly one):
  --key GW=FILE       pin a gateway's key (repeatable; a bare --key FILE binds to the only gateway in view)
  --registry ADDRESS  keys from the Anchor contract's on-chain registry, judged at each anchor's block (needs --rpc)
  --tofu              trust the key a gateway announces on its key topic; never counts as verified (exit 4)

exit codes:
  0  every record is in a signed batch under a trusted key, every batch's anchor is confirmed by the chain,
     roll-ups by their chains, and the gateway's signed head shows nothing is missing at the end
  1  a check failed (a forgery, a gap, a truncated tail, an anchor the chain does not hold ...): see PROBLEM lines
  2  usage or configuration error, or a broker, chain or file that cannot be reached
  3  nothing failed and every check ran, but some records are not in a batch yet (pending; run again later)
  4  nothing failed, but a check could not run: no --rpc, --tofu, a roll-up target without --rollup-rpc, or no
     signed head received (see NOT CHECKED lines)
"""


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="independently verify what a gateway published",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_VERIFY_EPILOG,
        description="Subscribe to a gateway's topics (or read a capture file, or one proof bundle) and check every "
        "record: its batch manifest, the Merkle root, the SM2 signature under a key you trust, the "
        "prev-chain, seq gaps, the signed head (a dropped tail), and each anchor on the chain (with "
        "--rpc and --contract). Exits 0 only when everything verifies.",
    )
    p.add_argument("--broker", default=None, help="subscribe to this broker (mqtt://host:port, mqtts:// for TLS)")
    p.add_argument(
        "--ca-file",
        type=Path,
        default=None,
        help="with mqtts://: trust the broker's certificate only if this CA (PEM) signed it (default: the system CAs)",
    )
    p.add_argument("--cert-file", type=Path, default=None, help="with mqtts://: client certificate (PEM)")
    p.add_argument("--key-file", type=Path, default=None, help="its private key (PEM, mode 0600)")
    p.add_argument("--username", default=None, help="MQTT user name")
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="file holding the MQTT password (mode 0600; never give a password on the command line)",
    )
    p.add_argument("--region", default="+", help="region to subscribe to (default: all)")
    p.add_argument("--gateway", default="+", help="gateway id to subscribe to (default: all)")
    p.add_argument("--capture", type=Path, default=None, help="read messages from this capture file instead")
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="check one proof bundle (tiyi proof export) instead of a stream; with --rpc also on chain",
    )
    p.add_argument("--save", type=Path, default=None, help="also write received messages to this capture file")
    p.add_argument(
        "--rpc",
        default=None,
        metavar="URL",
        help="the anchor chain's JSON-RPC URL (fisco2+http://… for FISCO BCOS 2.x native RPC): confirm "
        "every anchor on the chain and ask it for the gateway's latest anchored batch",
    )
    p.add_argument(
        "--contract",
        default=None,
        metavar="ADDRESS",
        help="the Anchor contract on --rpc to trust (receipts never choose it)",
    )
    p.add_argument(
        "--rollup-rpc",
        action="append",
        default=[],
        metavar="TARGET=CONTRACT@URL",
        help="a roll-up target's chain and contract (e.g. health_supervision=0x5FbD…@http://node:8545): "
        "confirm roll-up anchors there, and with --require-complete require every batch rolled up "
        "(repeatable)",
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="[GW=]FILE",
        help="a trusted gateway public key (SPKI PEM), pinned for gateway GW (repeatable)",
    )
    p.add_argument(
        "--registry",
        default=None,
        metavar="CONTRACT",
        help="take each gateway's keys and anchoring account from this Anchor contract's on-chain "
        "registry (needs --rpc)",
    )
    p.add_argument(
        "--operator",
        default=None,
        metavar="ADDRESS",
        help="with --registry: accept only gateways registered by this operator account",
    )
    p.add_argument(
        "--tofu",
        action="store_true",
        help="trust the key each gateway announces (trust on first use); the result is never 'verified'",
    )
    p.add_argument(
        "--audience",
        default=None,
        metavar="AUD",
        help="verify this audience's view stream (aud/AUD/...) instead of the full stream",
    )
    p.add_argument(
        "--audience-purpose",
        default=None,
        metavar="PURPOSE",
        help="with --audience: the purpose you agreed with the gateway (views and consent are checked against "
        "it, never against what a message claims)",
    )
    p.add_argument(
        "--audience-key",
        default=None,
        type=Path,
        metavar="FILE",
        help="with --audience: the audience's SM4 keys, lines 'kid hex' (tiyi keys audience export); without it "
        "sealed content is reported as not checked",
    )
    p.add_argument(
        "--audience-clear",
        action="store_true",
        help="with --audience and --audience-key: accept views in clear (kid empty) instead of reporting not_sealed",
    )
    p.add_argument(
        "--audience-from",
        type=int,
        default=None,
        metavar="N",
        help="with --audience: you joined the stream at source batch N; views before it are reported as not checked",
    )
    p.add_argument(
        "--idle",
        type=float,
        default=5.0,
        help="stop listening after this many quiet seconds while the gateways heard are up or stopped "
        "cleanly (default 5)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="before anything is heard, or while a gateway is down by its last will (it crashed and "
        "will re-send), stop after this many quiet seconds instead (default 60)",
    )
    p.add_argument("--duration", type=float, default=None, help="stop listening after this many seconds")
    p.add_argument(
        "--require-complete",
        action="store_true",
        help="records not yet in a batch, and batches in no roll-up on a --rollup-rpc target, are failures",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_keys(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="manage the gateway's SM2 signing key and the audiences' SM4 keys")
    ks = p.add_subparsers(dest="keys_cmd", required=True)
    g = ks.add_parser(
        "generate",
        help="write gateway.key (PKCS#8 PEM, 0600) and gateway.pub (SPKI PEM)",
        description="Generate an SM2 key pair that OpenSSL reads and writes. The private key file is "
        "created 0600 in a 0700 directory; an existing key is never overwritten unless "
        "--force is given.",
    )
    g.add_argument(
        "--dir", type=Path, default=Path("/var/lib/tiyi/keys"), help="directory (default /var/lib/tiyi/keys)"
    )
    g.add_argument("--force", action="store_true", help="replace an existing key (the old one is lost)")
    s = ks.add_parser("show", help="print the public key and key id of a private key file")
    s.add_argument("path", type=Path)
    a = ks.add_parser(
        "audience",
        help="an audience's SM4 keys (encrypted views): new, rotate, list, export",
        description="Keys live in <state_dir>/keys/audience/AUD/, one 0600 file per key id. The newest key "
        "encrypts new views; older ones stay so unpublished views can be rebuilt. `export` prints "
        "'kid hex' lines for the platform (hand them over out of band; they are secrets).",
    )
    a.add_argument("audience_cmd", choices=["new", "rotate", "list", "export"])
    a.add_argument("aud", help="the audience id ([[audience]] id in the configuration)")
    a.add_argument("--config", type=Path, required=True, help="the gateway's configuration (state dir, audiences)")


def _add_proof(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proof", help="export a self-contained proof for one reading")
    ps = p.add_subparsers(dest="proof_cmd", required=True)
    e = ps.add_parser(
        "export",
        help="write a JSON proof bundle for one record from the gateway's journal",
        description="The bundle holds the record's exact bytes, its Merkle inclusion path, the "
        "SM2-signed batch manifest (with the gateway's public key) and the final anchor "
        "receipt. Anyone can check it with `tiyi verify --bundle FILE [--rpc URL]`.",
    )
    e.add_argument("--config", type=Path, required=True, help="the gateway's configuration (for its state dir)")
    e.add_argument("--seq", type=int, required=True, help="the record's seq number")
    e.add_argument("-o", "--output", type=Path, default=None, help="write here instead of standard output")


def _add_chain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chain",
        help="the on-chain gateway registry (alliance administrator and gym operators)",
        description="Roles on the Anchor contract: the alliance administrator (the account that deployed it) approves "
        "operator accounts; an approved operator registers a gateway id with the gateway's SM2 public key "
        "and the chain account the gateway anchors from (`tiyi chain account`), and may later rotate or "
        "revoke it (the administrator may revoke too). Platforms then verify with `tiyi verify --registry "
        "CONTRACT --rpc URL` instead of pinning keys by hand. URLs: http(s)://… for EVM JSON-RPC, "
        "fisco2+http(s)://… for FISCO BCOS 2.x.",
    )
    cs = p.add_subparsers(dest="chain_cmd", required=True)
    for name, hlp in (
        ("approve-operator", "administrator: allow an operator account to register gateways"),
        ("revoke-operator", "administrator: withdraw an operator's right to register and rotate"),
        ("transfer-admin", "administrator: hand the administrator role to another account"),
        ("register", "operator: register a gateway id with its SM2 key and anchoring account"),
        ("rotate", "operator: replace a registered gateway's key (and anchoring account)"),
        ("revoke", "operator or administrator: revoke a gateway (its signatures stop being trusted)"),
        ("show", "print a gateway's registry entry and key history"),
    ):
        c = cs.add_parser(name, help=hlp, description=hlp)
        c.add_argument("--rpc", required=True, help="chain JSON-RPC URL")
        c.add_argument("--contract", required=True, help="the Anchor contract address")
        if name.endswith("operator") or name == "transfer-admin":
            c.add_argument("--account", required=True, help="the account address (0x + 40 hex digits)")
        else:
            c.add_argument("--gateway", required=True, help="gateway id")
        if name in ("register", "rotate"):
            c.add_argument("--pub", type=Path, required=True, help="the gateway's SM2 public key (gateway.pub)")
            c.add_argument(
                "--anchorer",
                required=True,
                metavar="ADDRESS",
                help="the chain account the gateway anchors from (on the gateway: tiyi chain account --config FILE)",
            )
        if name != "show":
            c.add_argument(
                "--operator-key",
                type=Path,
                required=True,
                help="your own chain account key file (hex, 0600; created if absent): the administrator's "
                "or the operator's",
            )
    a = cs.add_parser(
        "account",
        help="print the chain account address a gateway anchors from",
        description="Reads (or creates, 0600) the gateway's chain account key named by its configuration "
        "and prints the account address, to give to the operator for `tiyi chain register`.",
    )
    a.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")


def _add_api(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "api",
        help="bearer tokens for the admin API and dashboard",
        description="Tokens are shown once when made; the token file ([api] token_file, default "
        "<state_dir>/api-tokens) keeps only their SHA-256 hashes. The running gateway picks changes up at once.",
    )
    ts = p.add_subparsers(dest="api_cmd", required=True).add_parser("token", help="add, list or remove tokens")
    ops = ts.add_subparsers(dest="api_op", required=True)
    for name, hlp in (("add", "make a token and print it (once)"), ("list", "token names"), ("remove", "revoke")):
        d = ops.add_parser(name, help=hlp)
        d.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")
        if name != "list":
            d.add_argument("name", help="who or what uses the token, e.g. dashboard-front-desk")


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="one screen: broker, chain, journal, last batch and anchor, devices, alarms",
        description="Reads the running gateway's API ([api] in the config; token from --token-file or "
        "$TIYI_API_TOKEN), else the journal. Exit status 0 when ready without alarms, 1 otherwise.",
    )
    p.add_argument("--config", type=Path, required=True, help="the gateway's configuration file")
    p.add_argument("--token-file", type=Path, default=None, help="a file holding an API token (made by tiyi api)")


def _add_devices(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devices",
        help="pair, list and forget Bluetooth devices",
        description="The gateway ingests only paired devices (plus [ble] allow in the config). "
        "Pairing takes effect within seconds, without a restart. Devices the gateway "
        "has seen but that are not paired are listed too.",
    )
    ds = p.add_subparsers(dest="devices_cmd", required=True)
    for name, hlp in (
        ("list", "paired devices, and devices seen but not paired"),
        (
            "pair",
            "allow a device: an address AA:BB:CC:DD:EE:FF, name:<advertised name>, "
            "irk:<32 hex digits> for a device that rotates private addresses, or "
            "vendor:<company id> for every device of one brand",
        ),
        ("forget", "stop ingesting a device"),
    ):
        d = ds.add_parser(name, help=hlp)
        d.add_argument("--config", type=Path, required=True, help="the gateway's configuration (state dir)")
        if name != "list":
            d.add_argument(
                "device",
                help="AA:BB:CC:DD:EE:FF, name:<advertised name>, irk:<IRK, most significant "
                "byte first> (phones and watches that hide behind private addresses) "
                "or vendor:<company id, e.g. 0x006B>",
            )
        if name == "pair":
            d.add_argument("--model", default=None, help="device model, for per-model quirks")
            d.add_argument("--note", default=None, help="free text, e.g. where the device lives")
            d.add_argument(
                "--quirk",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help="a model's deviation from the spec, e.g. ftms_variant=current (repeatable)",
            )
            d.add_argument(
                "--only",
                action="append",
                default=[],
                metavar="UUID",
                help="subscribe only to this characteristic, e.g. 2a37 (repeatable; default: every "
                "characteristic the gateway decodes)",
            )


def _add_members(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "members",
        help="bind a gym member to a device for a session (records then carry the member's pseudonym)",
        description="Records of a bound device carry sub, HMAC-SM3 of the member id under this site's secret. "
        "The member id itself is never stored, logged or sent.",
    )
    ms = p.add_subparsers(dest="members_cmd", required=True)
    for name, hlp in (
        ("bind", "bind a member to a device (replaces its previous wearer)"),
        ("unbind", "end a device's session: its next records carry no sub"),
        ("list", "bound devices and their subject ids"),
        ("grant", "record a member's consent to a purpose (signed into the consent chain)"),
        ("withdraw", "record a member's withdrawal of consent to a purpose"),
    ):
        m = ms.add_parser(name, help=hlp)
        m.add_argument("--config", type=Path, required=True, help="the gateway's configuration (state dir)")
        if name in ("bind", "unbind"):
            m.add_argument("dev", help="the device id records carry (see `tiyi devices list`: id ble-...)")
        if name in ("bind", "grant", "withdraw"):
            m.add_argument("member", help="the member id from the gym's own system; - reads it from stdin")
        if name in ("grant", "withdraw"):
            m.add_argument("purpose", help="fitness_service, health_management, research or insurance")


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sim",
        help="simulated gyms and clinics: list and run scenarios",
        description="Scenarios describe a site's devices in TOML (see firmware_sim/scenarios/). "
        "`run` drives them through a full gateway, broker and chain like `tiyi demo`, "
        "directly or as emulated Bluetooth peripherals (--ble), and verifies the result.",
    )
    ss = p.add_subparsers(dest="sim_cmd", required=True)
    ss.add_parser("list", help="the built-in scenarios")
    r = ss.add_parser("run", help="run a scenario (a built-in name or a .toml file)")
    r.add_argument("scenario", help="built-in name (tiyi sim list) or path to a scenario file")
    r.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="write every emitted frame (device, characteristic, raw bytes, time) to this CBOR sequence",
    )
    r.add_argument(
        "--audiences",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="give the simulated gateway the [[audience]] tables of this gateway configuration (its [gateway] id "
        "and state_dir must match --gateway-id and --state-dir, where `tiyi members` keeps bindings and consent)",
    )
    _add_run_options(r)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="measure the pipeline against a running broker")
    bs = p.add_subparsers(dest="bench_cmd", required=True)
    b = bs.add_parser(
        "pipeline",
        help="push N records through the full pipeline as fast as possible",
        description="Decode, journal (temporary state dir), publish QoS 1 on the real topics, batch, "
        "Merkle, SM2-sign and anchor on the in-process chain; wait until everything is "
        "acknowledged and anchored, verify the stream with a subscriber, and print one "
        "JSON line: records, seconds, records_per_s, batches, anchored, verified.",
    )
    b.add_argument("--broker", required=True, help="mqtt://HOST:PORT of a broker that already runs")
    b.add_argument("--records", type=int, default=20_000)
    b.add_argument("--devices", type=int, default=50)
    b.add_argument("--no-verify", action="store_true", help="skip the verifying subscriber")


def _add_broker(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("broker", help="broker configuration for tiyi (Mosquitto ACL)")
    bs = p.add_subparsers(dest="broker_cmd", required=True)
    a = bs.add_parser(
        "acl",
        help="write the Mosquitto ACL file: gateways write only their own topics, platforms read",
        description="One section per account, no patterns (Mosquitto applies pattern lines to every "
        "account). A gateway's MQTT user name is its gateway id. Regenerate the whole file "
        "when gateways come or go, then reload Mosquitto. See deploy/README.md.",
    )
    a.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="REGION/ID",
        help="a gateway account, e.g. shenzhen/gw-sz-futian-001: may write only tiyi/v1/REGION/ID/# (repeatable)",
    )
    a.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="USER[=REGION,...]",
        help="a read-only platform account of the site owner (reads readings too): every region, or only those "
        "listed (repeatable)",
    )
    a.add_argument(
        "--audience",
        action="append",
        default=[],
        metavar="AUD[=REGION,...]",
        help="an audience's read-only account: its own view (aud/AUD/) and the proof topics, never data/ (repeatable)",
    )
    a.add_argument("-o", "--output", type=Path, default=None, help="write the file here (default: standard output)")


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="check a gateway configuration file")
    c = p.add_subparsers(dest="config_cmd", required=True).add_parser(
        "check",
        help="list every problem of a configuration, or print its effective settings",
        description="Parse FILE exactly as `tiyi run` does and list every problem, each naming its setting (exit 1); "
        "with none, print OK and a summary of the effective settings with secrets left out (exit 0). "
        "The signing key, MQTT password and TLS files it names are checked too unless --no-files.",
    )
    c.add_argument("file", type=Path)
    c.add_argument("--no-files", action="store_true", help="check the file alone (e.g. on another machine)")


def _add_decode(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decode",
        help="decode one BLE characteristic payload to JSON",
        description="Decode a payload as the gateway would. The characteristic may be given as "
        "2a37, 0x2A37 or 00002a37-0000-1000-8000-00805f9b34fb; the payload as hex "
        "(spaces and colons allowed). Exit code 2 for malformed input.",
    )
    p.add_argument("characteristic")
    p.add_argument("hex", nargs="+")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiyi",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
        description="tiyi-edge: collect BLE health and fitness readings, journal them durably, stream them over "
        "MQTT, sign SM3 Merkle batches with SM2 and anchor them on the alliance chain.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_run,
        _add_verify,
        _add_keys,
        _add_proof,
        _add_chain,
        _add_devices,
        _add_members,
        _add_api,
        _add_status,
        _add_sim,
        _add_bench,
        _add_broker,
        _add_config,
        _add_decode,
    ):
        add(sub)
    for name, hlp in _PLATFORM_COMMANDS.items():  # parsed by the ingest package itself (see main)
        sub.add_parser(name, help=hlp, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


# The platform side's commands live in ``ingest`` (installed with the ``platform`` extra); tiyi only hands them on.
_PLATFORM_COMMANDS = {
    "ingest": "verify gateway streams and store them in PostgreSQL (shared subscription; see tiyi ingest --help)",
    "export": "export proven records from the ingest database as FHIR R4, SenML or CSV",
}


def _platform(argv: list[str]) -> int | None:
    """``tiyi ingest …``, ``tiyi export …`` and ``tiyi proof export --db …``, delegated; None for anything else."""
    if argv[:1] == ["ingest"]:
        from ingest.__main__ import main as ingest_main

        return ingest_main(argv[1:])
    if argv[:1] == ["export"]:
        from ingest.commands import export_main

        return export_main(argv[1:])
    if argv[:2] == ["proof", "export"] and any(a == "--db" or a.startswith("--db=") for a in argv[2:]):
        from ingest.commands import proof_main

        return proof_main(argv[2:])
    return None


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    from gateway.ble.redact import install_scrub_filter

    install_scrub_filter()  # bleak, BlueZ and D-Bus messages carry device addresses: none reaches a log line


def _cmd_decode(args: argparse.Namespace) -> int:
    from edge.errors import EdgeError
    from edge.gatt import decode, parse_uuid

    try:
        char = parse_uuid(args.characteristic)
        text = "".join(args.hex).replace(":", "").replace(" ", "")
        if text.lower().startswith("0x"):
            text = text[2:]
        data = bytes.fromhex(text)
        readings = decode(char, data)
    except EdgeError as exc:
        print(f"tiyi decode: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"tiyi decode: payload is not valid hex: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = [{"kind": r.kind, "val": r.val, **({"q": list(r.q)} if r.q else {})} for r in readings]
    print(json.dumps(out if len(out) != 1 else out[0], indent=2))
    return EXIT_OK


def _cmd_keys(args: argparse.Namespace) -> int:
    from gateway.keys import generate_keypair, load_signer

    if args.keys_cmd == "audience":
        from gateway.audience_keys import audience_keys_main

        return audience_keys_main(args.config, args.audience_cmd, args.aud)
    if args.keys_cmd == "generate":
        priv, pub = generate_keypair(args.dir, force=args.force)
        signer = load_signer(priv)
        print(f"private key: {priv} (0600)\npublic key:  {pub}\nkey id:      {signer.key_id}")
        return EXIT_OK
    signer = load_signer(args.path)
    print(signer.public_key_pem(), end="")
    print(f"key id: {signer.key_id}")
    return EXIT_OK


def _cmd_sim(args: argparse.Namespace) -> int:
    from firmware_sim.scenario import ALL_MODELS, builtin_scenarios, parse_scenario
    from gateway.errors import ConfigError

    scenarios = builtin_scenarios()
    if args.sim_cmd == "list":
        for name, sc in scenarios.items():
            print(f"{name:16s} {sc.device_count:4d} devices, {sc.duration_s / 60:5.1f} min  {sc.description}")
        print(f"\ndevice models for scenario files: {', '.join(ALL_MODELS)}")
        return EXIT_OK
    try:
        if args.scenario in scenarios:
            scenario = scenarios[args.scenario]
        else:
            path = Path(args.scenario)
            scenario = parse_scenario(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(
            f"no built-in scenario {args.scenario!r} and no such file ({exc.strerror}); see `tiyi sim list`"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{args.scenario}: not UTF-8 text") from exc
    from gateway.cli.demo import DemoOptions, demo_main

    duration = scenario.duration_s / args.speed if args.duration is None else args.duration
    return demo_main(DemoOptions.from_args(args, scenario=scenario, devices=scenario.device_count, duration=duration))


def _cmd_members(args: argparse.Namespace) -> int:
    from gateway.binding import Bindings
    from gateway.clock import wall_ms
    from gateway.config import load_config
    from gateway.runtime import secret_file

    cfg = load_config(args.config)
    secret = secret_file(cfg.site_secret_path)
    table = Bindings(cfg.state_dir, secret)
    member = sys.stdin.readline() if getattr(args, "member", None) == "-" else getattr(args, "member", "")
    if args.members_cmd in ("grant", "withdraw"):
        from gateway.binding import subject_id
        from gateway.consent import ConsentLedger
        from gateway.keys import load_signer

        ledger = ConsentLedger(cfg.state_dir, cfg.gateway_id, load_signer(cfg.signing_key_path))
        sub = subject_id(secret, member)
        e = ledger.record(sub, args.purpose, args.members_cmd == "grant", wall_ms()).event
        print(f"consent event {e.n}: {sub} {'granted' if e.granted else 'withdrew'} {e.purpose}")
        return EXIT_OK
    if args.members_cmd == "bind":
        b = table.bind(args.dev, member, wall_ms())
        print(f"bound {b.dev} to {b.sub}; its next records carry it")
        return EXIT_OK
    if args.members_cmd == "unbind":
        if not table.unbind(args.dev):
            print(f"{args.dev} was not bound", file=sys.stderr)
            return EXIT_FAIL
        print(f"unbound {args.dev}; its next records carry no sub")
        return EXIT_OK
    for b in table.list():
        print(f"{b.dev:24s} {b.sub}  since {b.since_ms}")
    return EXIT_OK


def _cmd_devices(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.registry import DeviceRegistry, RegistryError, pseudonym
    from gateway.runtime import secret_file

    cfg = load_config(args.config)
    reg = DeviceRegistry(cfg.state_dir)
    if args.devices_cmd == "pair":
        quirks = dict(q.split("=", 1) for q in args.quirk if "=" in q)
        if len(quirks) != len(args.quirk):
            raise RegistryError("--quirk takes NAME=VALUE")
        p = reg.pair(args.device, args.model, args.note, quirks, args.only)
        print(f"paired {p.entry}; the running gateway picks it up within seconds")
        return EXIT_OK
    if args.devices_cmd == "forget":
        if not reg.forget(args.device):
            print(f"{args.device} was not paired", file=sys.stderr)
            return EXIT_FAIL
        print(f"forgot {args.device}; records already journaled stay")
        return EXIT_OK
    key = secret_file(cfg.pseudonym_key_path)
    paired = reg.paired()
    from_config = sorted(cfg.ble.allow)
    print(f"paired ({len(paired) + len(from_config)}):")
    for e in from_config:
        print(f"  {e:32s} (from {args.config})")
    for d in paired:
        pseud = "" if d.entry.startswith(("name:", "vendor:")) else f"  id {pseudonym(key, d.entry)}"
        only = f"only {','.join(f'{c:04x}' for c in d.profiles)}" if d.profiles else None
        extra = " ".join(x for x in (d.model, d.note, *(f"{k}={v}" for k, v in d.quirks.items()), only) if x)
        print(f"  {d.entry:32s}{pseud}  {extra}".rstrip())
    seen = {a: n for a, n in reg.seen().items() if a not in {p.entry for p in paired}}
    print(f"seen, not paired ({len(seen)}):")
    for a, n in seen.items():
        print(f"  {a:32s} {n or ''}".rstrip())
    return EXIT_OK


def exit_code(exc: BaseException) -> int | None:
    """The exit code for an error a user can cause (bad input, a node or broker that is down), or None for
    a bug, which keeps its traceback. This is the one place errors become exit codes: the first row of
    ``_exit_rows`` that matches wins (commands raise their package's errors and never re-wrap them for a code)."""
    if isinstance(exc, BaseExceptionGroup):  # from a TaskGroup: the first error tells
        return exit_code(exc.exceptions[0])
    for matches, code in _exit_rows():
        if matches(exc):
            return code
    return None


def _exit_rows() -> list[tuple[Callable[[BaseException], bool], int]]:
    from anchoring.errors import AnchoringError, MalformedReply, MalformedTransaction
    from edge.errors import EdgeError
    from gateway.errors import GatewayError

    web3_errors = sys.modules.get("web3.exceptions")
    unreachable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    if web3_errors is not None:
        unreachable += (web3_errors.ProviderConnectionError,)
    roots = (GatewayError, AnchoringError, EdgeError)
    return [
        # a broker or chain node that cannot be reached, also when wrapped (ChainUnavailable in a GatewayError)
        (lambda e: any(isinstance(c, unreachable) for c in _causes(e)), EXIT_USAGE),
        # a node that answered nonsense: a failure, not the user's input
        (lambda e: isinstance(e, MalformedReply | MalformedTransaction), EXIT_FAIL),
        # the package errors that resemble ValueError are bad input (arguments, files, scenarios, bundles)
        (lambda e: isinstance(e, roots) and isinstance(e, ValueError), EXIT_USAGE),
        (lambda e: isinstance(e, roots), EXIT_FAIL),
        (lambda e: isinstance(e, OSError), EXIT_FAIL),  # a file that cannot be read or written
    ]


def _causes(exc: BaseException, depth: int = 8) -> list[BaseException]:
    out: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(out) < depth:
        out.append(cause)
        cause = cause.__cause__
    return out


def _one_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return " ".join((str(exc) or type(exc).__name__).split())


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.cli.demo import DemoOptions, demo_main

    return demo_main(DemoOptions.from_args(args))


def _cmd_run(args: argparse.Namespace) -> int:
    from gateway.runtime import RunOptions, run_main

    return run_main(RunOptions.from_args(args))


def _cmd_chain(args: argparse.Namespace) -> int:
    from gateway.cli.chain import ChainOptions, registry_main

    return registry_main(ChainOptions.from_args(args))


def _cmd_broker(args: argparse.Namespace) -> int:
    from gateway.broker_acl import acl_main

    return acl_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from gateway.cli.bench import PipelineOptions, bench_pipeline_main

    return bench_pipeline_main(PipelineOptions.from_args(args))


def _cmd_proof(args: argparse.Namespace) -> int:
    from gateway.cli.proof import ProofExportOptions, export_main

    return export_main(ProofExportOptions.from_args(args))


def _cmd_api(args: argparse.Namespace) -> int:
    from gateway.api_tokens import TokenStore, add_token, remove_token
    from gateway.config import load_config

    path = load_config(args.config).api_token_path
    if args.api_op == "add":
        token = add_token(path, args.name)
        print(token)
        print(f"token {args.name!r} added to {path} (only its hash is kept: copy it now)", file=sys.stderr)
        return EXIT_OK
    if args.api_op == "remove":
        if not remove_token(path, args.name):
            print(f"no token named {args.name!r} in {path}", file=sys.stderr)
            return EXIT_FAIL
        print(f"token {args.name!r} removed")
        return EXIT_OK
    for name in TokenStore.load(path).names:
        print(name)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from gateway.status import status_main

    return status_main(args.config, args.token_file)


def _cmd_config(args: argparse.Namespace) -> int:
    from gateway.config_check import config_check_main

    return config_check_main(args.file, files=not args.no_files)


def _cmd_verify(args: argparse.Namespace) -> int:
    from gateway.cli.verify import VerifyOptions, verify_main

    opts = VerifyOptions.from_args(args)
    if opts.bundle is not None:
        from gateway.cli.proof import verify_bundle_main

        return verify_bundle_main(opts)
    return verify_main(opts)


# Each command's module is imported only when it runs, so `tiyi --help` stays instant on a Raspberry Pi.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "decode": _cmd_decode,
    "keys": _cmd_keys,
    "demo": _cmd_demo,
    "run": _cmd_run,
    "sim": _cmd_sim,
    "devices": _cmd_devices,
    "members": _cmd_members,
    "api": _cmd_api,
    "status": _cmd_status,
    "chain": _cmd_chain,
    "broker": _cmd_broker,
    "bench": _cmd_bench,
    "proof": _cmd_proof,
    "verify": _cmd_verify,
    "config": _cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    delegated = _platform(list(sys.argv[1:] if argv is None else argv))
    if delegated is not None:
        return delegated
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    command = _COMMANDS.get(args.cmd)
    if command is None:
        return EXIT_USAGE
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code = exit_code(exc)
        if code is None:
            raise
        logging.getLogger("tiyi").debug("the error's traceback (-vv)", exc_info=exc)
        print(f"tiyi {args.cmd}: {_one_line(exc)}", file=sys.stderr)
        return code
