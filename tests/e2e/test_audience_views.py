"""Issue 19's "done when", end to end: a full `tiyi sim run` (emulated Bluetooth peripherals collected through
bleak, a real Mosquitto) with wearer bindings and two audiences —

- ``platform-health``: mainland, health_management, SM4-GCM, raw dropped, times to the minute, whole numbers;
- ``hku-research``: Hong Kong, research, no legal basis, heart rate as aggregates only, ``min_n = 2``;
- ``hku-cohort``: the same with ``min_n = 3``, one more than the members who consented to research —

and then, from what an observer subscribed to ``#`` received and from the gateway's log:

- no device address, member id or member name appears in any topic, payload (decoded, sealed content opened
  with the exported keys) or log line;
- a withdrawal recorded mid-run (``tiyi members withdraw``) stops that member's records in that audience from
  the first batch closed after it, and every consent event received verifies and precedes the views built on it;
- the Hong Kong audiences get no individual reading from the Shenzhen gateway (cross-border), only
  de-identified aggregates, each over the readings of at least ``min_n`` distinct members: two consenting
  members' hundreds of readings make aggregates for ``min_n = 2`` and none at all for ``min_n = 3``;
- every sealed record opens with the audience's key, and one flipped ciphertext byte is detected;
- every view manifest verifies under the gateway key, covers its source batch exactly once and names a source
  root the batch manifest carries.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest

from anchoring.capture import write_capture_item
from edge.consent import SignedConsent
from edge.manifest import Manifest, SignedManifest
from edge.record import Record, decode_data_message, encode_data_message
from edge.sealing import SealError
from edge.signing import Verifier
from edge.sm2 import load_public_key_pem
from edge.topics import Topics, parse_topic
from edge.view import SignedView, ViewManifest, open_view_record
from gateway.binding import subject_id
from gateway.cli import main
from gateway.clock import wall_ms
from gateway.registry import pseudonym
from gateway.runtime import secret_file
from tests.conftest import ROOT, Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow

GW, REGION = "gw-sz-aud-1", "shenzhen"
HEALTH, RESEARCH, COHORT = "platform-health", "hku-research", "hku-cohort"
# (member id as the gym's system has it, scenario device index): the clinic scenario's devices 0-5 are heart-rate
# straps, 6-11 oximeters; the emulated radio gives device i the address F3:00:00:00:00:<i>.
ALICE, BOB, CAROL, DAVE = "张伟-1001", "Bob Leeson 1002", "陈小红-1003", "Dave Okafor 1004"
WEARERS = {ALICE: 0, BOB: 6, CAROL: 1, DAVE: 2}
RESEARCHERS = (ALICE, DAVE)  # the members with research consent and a heart-rate strap

CONFIG = """\
[gateway]
id = "{gw}"
region = "{region}"
state_dir = "{state}"
source = "sim"

[[audience]]
id = "{health}"
purpose = "health_management"
jurisdiction = "mainland"
encrypt = true
[audience.minimise."*"]
drop_raw = true
time_s = 60
round = 0

[[audience]]
id = "{research}"
purpose = "research"
jurisdiction = "hongkong"
min_n = 2
[audience.minimise.heart_rate]
aggregate = true

[[audience]]
id = "{cohort}"
purpose = "research"
jurisdiction = "hongkong"
min_n = 3
[audience.minimise.heart_rate]
aggregate = true
"""


def address(i: int) -> str:
    return f"F3:00:00:00:{i // 256:02X}:{i % 256:02X}"


def forbidden(n_devices: int) -> list[bytes]:
    """Every spelling of what must never leave the gateway: addresses (text in both cases and with or without
    colons, and the 6 bytes in both orders) and member ids (UTF-8, and each name part of 5 bytes or more on its
    own: shorter ones, like a number, turn up by chance in binary fields)."""
    out: list[bytes] = []
    for i in range(n_devices):
        a = address(i)
        raw = bytes.fromhex(a.replace(":", ""))
        out += [a.encode(), a.lower().encode(), a.replace(":", "").encode(), a.replace(":", "").lower().encode()]
        out += [raw, raw[::-1]]
    for member in WEARERS:
        parts = [p.encode() for p in member.replace("-", " ").split() if not p.isdigit()]
        out += [member.encode()] + [p for p in parts if len(p) >= 5]
    return out


def scan(what: str, blob: bytes, needles: list[bytes]) -> None:
    hits = [n for n in needles if n in blob]
    assert not hits, f"{what} carries {hits!r}"


def texts(x: Any) -> bytes:
    """Every text and byte string inside a decoded CBOR value, joined (so a needle split by framing is found)."""
    if isinstance(x, dict):
        return b"|".join(texts(k) + b"=" + texts(v) for k, v in x.items())
    if isinstance(x, list | tuple):
        return b"|".join(texts(v) for v in x)
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, bytes):
        return x + b"|" + texts(_maybe_cbor(x))
    return repr(x).encode()


def _maybe_cbor(b: bytes) -> Any:
    try:
        return cbor2.loads(b)
    except Exception:
        return None


@dataclass
class Site:
    state: Path
    cfg: Path
    subs: dict[str, str]  # member id → sub
    keys: dict[str, bytes]  # the health audience's keys, as exported for its platform


def prepare(tmp_path: Path) -> Site:
    """Keys, the audience key, bindings and consent, all through the CLI as staff would do it."""
    state = tmp_path / "state"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(CONFIG.format(gw=GW, region=REGION, state=state, health=HEALTH, research=RESEARCH, cohort=COHORT))
    assert main(["keys", "generate", "--dir", str(state / "keys")]) == 0
    assert main(["keys", "audience", "new", HEALTH, "--config", str(cfg)]) == 0
    dev_key = secret_file(state / "keys" / "device-pseudonym.key")
    site = secret_file(state / "keys" / "site-subject.key")
    for member, i in WEARERS.items():
        assert main(["members", "bind", "--config", str(cfg), pseudonym(dev_key, address(i)), member]) == 0
    for member in (ALICE, BOB):
        for purpose in ("health_management", "research"):
            assert main(["members", "grant", "--config", str(cfg), member, purpose]) == 0
    assert main(["members", "grant", "--config", str(cfg), CAROL, "health_management"]) == 0  # not research
    assert main(["members", "grant", "--config", str(cfg), DAVE, "research"]) == 0  # research only
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "audience", "export", HEALTH, "--config", str(cfg)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        text=True,
    ).stdout
    (tmp_path / "health.keys").write_text(out)
    keys = {kid: bytes.fromhex(h) for kid, h in (line.split() for line in out.splitlines())}
    return Site(state, cfg, {m: subject_id(site, m) for m in WEARERS}, keys)


def run_sim(mosquitto: Mosquitto, site: Site, log_path: Path) -> tuple[list[tuple[str, bytes, bool]], int]:
    """The sim run, observed on ``#``; ALICE withdraws her health_management consent once a few views are out.
    Returns every message and the wall time by which the withdrawal was on disk."""
    cmd = [
        sys.executable, "-m", "gateway.cli", "-v", "sim", "run", "clinic", "--ble", "--duration", "24",
        "--speed", "10", "--broker", mosquitto.url, "--state-dir", str(site.state), "--gateway-id", GW,
        "--region", REGION, "--batch-seconds", "1.5", "--rollup-every", "0", "--audiences", str(site.cfg),
    ]  # fmt: skip
    with Recorder(mosquitto.url, Topics(REGION, GW), subscription="#") as rec, log_path.open("wb") as log:
        sim = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            view_topic = f"tiyi/v1/{REGION}/{GW}/aud/{HEALTH}/view"
            deadline = time.monotonic() + 120
            while sum(t == view_topic for t, _, _ in list(rec.messages)) < 3:  # a few views with ALICE in them
                assert sim.poll() is None and time.monotonic() < deadline, "no health views arrived"
                time.sleep(0.1)
            assert main(["members", "withdraw", "--config", str(site.cfg), ALICE, "health_management"]) == 0
            recorded = wall_ms()  # consent.json is replaced by now: every batch closed later must honour it
            assert sim.wait(300) == 0, log_path.read_text(errors="replace")[-3000:]
        finally:
            if sim.poll() is None:
                sim.kill()
        rec.wait_idle(1.0)
    return list(rec.messages), recorded


@dataclass
class Stream:
    """What the observer received, decoded (sealed content opened with the audience's keys)."""

    views: dict[str, list[tuple[int, ViewManifest]]] = field(default_factory=lambda: defaultdict(list))
    records: dict[str, dict[int, Record]] = field(default_factory=lambda: defaultdict(dict))
    consent: dict[str, list[tuple[int, SignedConsent]]] = field(default_factory=lambda: defaultdict(list))
    batches: dict[int, Manifest] = field(default_factory=dict)
    sealed: list[Record] = field(default_factory=list)
    source: dict[int, Record] = field(default_factory=dict)  # the site's full stream (the observer reads '#')


def decode_and_scan(messages: list[tuple[str, bytes, bool]], site: Site, gw_pub: Verifier) -> Stream:
    needles = forbidden(16)
    st = Stream()
    for i, (topic, payload, _) in enumerate(messages):
        scan(f"topic {topic}", topic.encode(), needles)
        scan(f"payload on {topic}", payload, needles)
        scan(f"decoded payload on {topic}", texts(_maybe_cbor(payload)), needles)
        p = parse_topic(topic)
        if p.channel == "aud_data" and p.aud is not None:
            for data in decode_data_message(payload):
                r = Record.from_bytes(data)
                assert r.gw == GW and r.dev == p.dev
                if p.aud == HEALTH:
                    assert r.enc is not None and r.val == {} and r.raw == b""  # sealed: nothing readable
                    val, raw = open_view_record(r, site.keys)
                    scan("opened sealed content", cbor2.dumps([val, raw]) + raw, needles)
                    st.sealed.append(r)
                st.records[p.aud][r.seq] = r
        elif p.channel == "aud_view" and p.aud is not None:
            signed = SignedView.from_bytes(payload)
            assert signed.verify(gw_pub)
            st.views[p.aud].append((i, signed.manifest))
        elif p.channel == "aud_consent" and p.aud is not None:
            event = SignedConsent.from_bytes(payload)
            assert event.verify(gw_pub)
            st.consent[p.aud].append((i, event))
        elif p.channel == "batch":
            m = SignedManifest.from_bytes(payload).manifest
            st.batches[m.batch] = m
        elif p.channel == "data":
            st.source.update((r.seq, r) for r in map(Record.from_bytes, decode_data_message(payload)))
    return st


def check_views_complete(st: Stream) -> None:
    """One view per source batch, naming its root and range; each source seq in exactly one view record or
    withheld range — also for a health view built before the mid-run withdrawal and not yet sent when it was
    recorded: it is rebuilt at the withdrawal's head, so its records all arrive."""
    assert set(st.views) == {HEALTH, RESEARCH, COHORT}
    for aud, vs in st.views.items():
        assert sorted({m.n for _, m in vs}) == sorted(st.batches), aud
        for _, m in vs:
            b = st.batches[m.n]
            assert (m.src_root, m.first, m.last) == (b.root, b.first_seq, b.last_seq)
            covered = [s for s in st.records[aud] if m.first <= s <= m.last]
            seqs = covered + [s for _, f, la in m.withheld for s in range(f, la + 1)]
            assert sorted(seqs) == list(range(m.first, m.last + 1)), (aud, m.n)
            assert m.count == len(covered)


def check_withdrawal(st: Stream, site: Site, recorded: int) -> None:
    subs = site.subs
    assert {r.sub for r in st.records[HEALTH].values()} == {subs[ALICE], subs[BOB], subs[CAROL]}  # no unbound
    events = st.consent[HEALTH]
    assert {e.event.purpose for _, e in events} == {"health_management"}
    ((w_index, w),) = [(i, e.event) for i, e in events if not e.event.granted]
    assert w.sub == subs[ALICE]
    assert all(i > w_index for i, m in st.views[HEALTH] if m.consent_n >= w.n)  # the event came first
    after = [m for _, m in st.views[HEALTH] if st.batches[m.n].created > recorded]
    before = [m for _, m in st.views[HEALTH] if m.consent_n < w.n]
    assert after and before

    def alices(views: list[ViewManifest]) -> list[Record]:
        return [
            r
            for s, r in st.records[HEALTH].items()
            if r.sub == subs[ALICE] and any(m.first <= s <= m.last for m in views)
        ]

    assert all(m.consent_n >= w.n for m in after) and not alices(after)  # from the next batch on: none
    assert alices(before)  # before it, there were


def check_sealed(st: Stream, site: Site) -> None:
    assert st.sealed and all(r.t % 60_000 == 0 for r in st.sealed)  # times coarsened outside the seal
    tampered = st.sealed[0]
    ct = bytearray((tampered.enc or {})["ct"])
    ct[len(ct) // 2] ^= 1
    forged = dataclasses.replace(tampered, enc={**(tampered.enc or {}), "ct": bytes(ct)})
    with pytest.raises(SealError):
        open_view_record(forged, site.keys)


def check_research(st: Stream, site: Site) -> None:
    """Hong Kong, no legal basis: no individual reading and no per-person aggregate, only de-identified
    heart-rate aggregates (no wearer, no device, whole minutes) over the heart-rate readings of the members
    who consented to research — and only when at least min_n distinct members made them: ALICE and DAVE
    (two) are enough for min_n = 2 and never for min_n = 3, however many readings they make (CAROL: no
    research consent; BOB: oximeter readings)."""
    research = list(st.records[RESEARCH].values())
    assert research and {r.kind for r in research} == {"heart_rate_agg"}
    assert {(r.sub, r.dev) for r in research} == {(None, "deidentified")}
    for r in research:
        t_end, n = r.val["t_end"], r.val["n"]
        assert isinstance(t_end, int) and isinstance(n, int)
        assert r.t % 60_000 == 0 and t_end % 60_000 == 0
    consenting = {site.subs[m] for m in RESEARCHERS}
    both = 0
    for _, m in st.views[RESEARCH]:
        theirs = [
            r for s, r in st.source.items() if m.first <= s <= m.last and r.sub in consenting and r.kind == "heart_rate"
        ]
        agg = [r for s, r in st.records[RESEARCH].items() if m.first <= s <= m.last]
        if len({r.sub for r in theirs}) >= 2:
            assert [r.val["n"] for r in agg] == [len(theirs)], m.n  # exactly their readings, nobody else's
            both += 1
        else:
            assert agg == [], m.n
    assert both
    reasons = {w[0] for _, m in st.views[RESEARCH] for w in m.withheld}
    assert {"cross_border", "unbound", "no_consent", "aggregated"} <= reasons
    assert {e.event.purpose for _, e in st.consent[RESEARCH]} == {"research"}
    # min_n = 3 with two consenting members: not one aggregate in the whole run, every one of their readings
    # withheld as cross_border, although each batch holds many more than three of them.
    assert st.views[COHORT] and not st.records[COHORT]
    most = 0
    for _, m in st.views[COHORT]:
        blocked = {s for reason, a, b in m.withheld if reason == "cross_border" for s in range(a, b + 1)}
        theirs = {s for s, r in st.source.items() if m.first <= s <= m.last and r.sub in consenting}
        assert theirs <= blocked and m.count == 0, m.n
        most = max(most, len(theirs))
    assert most > 3


def verify_capture(tmp_path: Path, site: Site, messages: list[tuple[str, bytes, bool]], name: str) -> str:
    """`tiyi verify --audience` on a capture of what the health platform's account may read (its own view
    and the proof topics), as that platform runs it: exit code and output."""
    capture = tmp_path / f"{name}.cbor"
    allowed = ("batch", "head", "anchor", "anchor_state", "key", "rollup", "aud_data", "aud_view", "aud_consent")
    with capture.open("wb") as fh:
        for topic, payload, retained in messages:
            p = parse_topic(topic)
            if p.channel in allowed and p.aud in (None, HEALTH):
                write_capture_item(fh, topic, payload, retained, 0)
    keyfile = tmp_path / "health.keys"
    keyfile.chmod(0o600)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "verify",
            "--capture",
            str(capture),
            "--audience",
            HEALTH,
            "--audience-purpose",
            "health_management",
            "--audience-key",
            str(keyfile),
            "--key",
            f"{GW}={site.state / 'keys' / 'gateway.pub'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def tamper_one_sealed_byte(messages: list[tuple[str, bytes, bool]]) -> list[tuple[str, bytes, bool]]:
    """The same stream with one byte of one sealed record's ciphertext flipped (the record re-encoded, so it
    still parses: only the seal can tell)."""
    out = list(messages)
    for i, (topic, payload, retained) in enumerate(out):
        if parse_topic(topic).channel == "aud_data" and f"/aud/{HEALTH}/" in topic:
            records = [Record.from_bytes(b) for b in decode_data_message(payload)]
            ct = bytearray((records[0].enc or {})["ct"])
            ct[0] ^= 0x01
            records[0] = dataclasses.replace(records[0], enc={**(records[0].enc or {}), "ct": bytes(ct)})
            out[i] = (topic, encode_data_message([bytes(r) for r in records]), retained)
            return out
    raise AssertionError("no sealed record to tamper with")


def test_sim_run_with_bindings_and_two_audiences(mosquitto: Mosquitto, tmp_path: Path) -> None:
    site = prepare(tmp_path)
    log_path = tmp_path / "sim.log"
    messages, recorded = run_sim(mosquitto, site, log_path)
    log_text = log_path.read_bytes()
    assert b"RESULT: every record verified" in log_text
    # The sim run verified each audience's stream as its platform would, anchors on the chain included.
    out = log_text.decode()
    for aud, purpose in ((HEALTH, "health_management"), (RESEARCH, "research"), (COHORT, "research")):
        part = out.split(f"audience {aud} (purpose {purpose})", 1)[1]
        assert part.split("RESULT: ", 1)[1].startswith("every view verified"), part[:2000]
    assert re.search(r"sealed    [1-9][0-9]* opened and authenticated, 0 not checked", out)
    needles = forbidden(16)
    with pytest.raises(AssertionError):  # the scan finds what it looks for
        scan("control", b"x" + address(3).lower().encode() + b"x", needles)
    for line in log_text.splitlines():
        scan("log line", line, needles)
    st = decode_and_scan(messages, site, load_public_key_pem((site.state / "keys" / "gateway.pub").read_text()))
    check_views_complete(st)
    check_withdrawal(st, site, recorded)
    check_sealed(st, site)
    check_research(st, site)
    # The platform's own tool on what its account can read: nothing fails (anchors need --rpc: exit 4) ...
    result = verify_capture(tmp_path, site, messages, "health")
    assert result.startswith("exit 4") and "PROBLEM" not in result and "0 not checked" in result, result
    # ... and one flipped ciphertext byte fails it.
    result = verify_capture(tmp_path, site, tamper_one_sealed_byte(messages), "tampered")
    assert result.startswith("exit 1") and "seal_broken" in result, result
