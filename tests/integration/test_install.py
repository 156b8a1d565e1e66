"""deploy/install.sh run for real against a throwaway root (``--root``).

Everything is real: useradd/groupadd/usermod edit the root's own /etc/passwd and /etc/group
(``--prefix``), ``python3 -m venv`` and pip build the package into the root's /opt/tiyi/.venv,
``tiyi keys generate`` writes the key, ``systemctl --root`` enables the unit and ``systemd-analyze verify
--root`` checks it against the venv it points at. Only what cannot happen in a folder is left out (apt,
starting the service), and the script says so. To stay fast, the venv gets the core package only
(``--extras none``); which extras a configuration needs is checked through ``--dry-run``.

A full run in a real Debian 12 root is a manual check (about 2.5 minutes with downloads, too slow for
``make test``); it was run once on the install branch, twice in a row, the second saying "nothing changed":

    debootstrap --variant=minbase --include=python3-venv,ca-certificates bookworm ROOT
    pip download -d ROOT/wheels "setuptools>=68" wheel ".[ble,evm]"    # the chroot has no pip index access
    mkdir ROOT/src && cp -r deploy pyproject.toml README.md edge gateway anchoring firmware_sim ingest ROOT/src/
    chroot ROOT env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TIYI_PIP_ARGS="--no-index --find-links /wheels" \
        /src/deploy/install.sh --no-start
    chroot ROOT systemd-analyze verify tiyi-gateway.service
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "install.sh"
EXAMPLE = REPO / "deploy" / "gateway.example.toml"


def require(tool: str, package: str) -> None:
    """A missing tool is a failed set-up, not a skipped check (`make test` installs it)."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run `make test` (it installs {package}) or apt-get install {package}")


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root (chown to the service user)"),
]


def make_root(path: Path) -> Path:
    """The least a Debian root has that install.sh reads: root in the user databases."""
    require("useradd", "passwd")
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (path / "etc" / "group").write_text("root:x:0:\n")
    (path / "etc" / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (path / "etc" / "gshadow").write_text("root:*::\n")
    return path


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=300, check=False
    )


def ids(root: Path, db: str, name: str) -> list[str]:
    for line in (root / "etc" / db).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in {db}")


def snapshot(root: Path) -> dict[str, tuple[int, int, int, float, str]]:
    """Every path's mode, owner, mtime and content digest (the venv's files included)."""
    out: dict[str, tuple[int, int, int, float, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if stat.S_ISREG(st.st_mode)
                else os.readlink(p)
                if stat.S_ISLNK(st.st_mode)
                else ""
            )
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime, digest)
    return out


@dataclass(frozen=True)
class Installed:
    root: Path
    first: subprocess.CompletedProcess[str]
    uid: int
    gid: int


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    root = make_root(tmp_path_factory.mktemp("pi"))
    host_passwd = Path("/etc/passwd").read_bytes()
    result = install(root, "--extras", "none")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path("/etc/passwd").read_bytes() == host_passwd  # --root never touches the host
    user = ids(root, "passwd", "tiyi")
    yield Installed(root, result, int(user[2]), int(user[3]))


def owner_mode(p: Path) -> tuple[int, int, int]:
    st = p.lstat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_fresh_install_creates_user_files_modes_and_owners(installed: Installed) -> None:
    root, uid, gid = installed.root, installed.uid, installed.gid
    user = ids(root, "passwd", "tiyi")
    assert user[5:] == ["/var/lib/tiyi", "/usr/sbin/nologin"] and int(user[2]) < 1000  # a system account
    assert "tiyi" in ids(root, "group", "bluetooth")[3].split(",")
    assert int(ids(root, "group", "tiyi")[2]) == gid
    expected = {
        "etc/tiyi": (0, gid, 0o750),
        "etc/tiyi/gateway.toml": (0, gid, 0o640),
        "opt/tiyi": (0, 0, 0o755),
        "var/lib/tiyi": (uid, gid, 0o700),
        "var/lib/tiyi/keys": (uid, gid, 0o700),
        "var/lib/tiyi/keys/gateway.key": (uid, gid, 0o600),
        "var/lib/tiyi/keys/gateway.pub": (uid, gid, 0o644),
        "etc/systemd/system/tiyi-gateway.service": (0, 0, 0o644),
    }
    for rel, want in expected.items():
        assert owner_mode(root / rel) == want, rel
    assert (root / "etc/tiyi/gateway.toml").read_bytes() == EXAMPLE.read_bytes()
    assert (root / "etc/systemd/system/tiyi-gateway.service").read_bytes() == (
        REPO / "deploy" / "tiyi-gateway.service"
    ).read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants/tiyi-gateway.service"
    assert os.readlink(wants) == "/etc/systemd/system/tiyi-gateway.service"
    assert "已更改 changed" in installed.first.stdout and "installed:" in installed.first.stdout


def test_the_venv_works_and_holds_the_key_it_generated(installed: Installed) -> None:
    tiyi = installed.root / "opt/tiyi/.venv/bin/tiyi"
    shown = subprocess.run(
        [str(tiyi), "keys", "show", str(installed.root / "var/lib/tiyi/keys/gateway.key")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert shown.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    assert (
        shown.stdout.split("-----END PUBLIC KEY-----\n")[0] + "-----END PUBLIC KEY-----\n"
        == (installed.root / "var/lib/tiyi/keys/gateway.pub").read_text()
    )


def test_systemd_accepts_the_installed_unit_and_the_notify_drop_in(installed: Installed, tmp_path: Path) -> None:
    require("systemd-analyze", "systemd")
    """The unit's ExecStart must be the venv install.sh made, and the Type=notify drop-in must parse."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(installed.root / "etc/systemd/system/tiyi-gateway.service", root / "etc/systemd/system")
    exe = root / "opt/tiyi/.venv/bin/tiyi"
    exe.parent.mkdir(parents=True)
    shutil.copy(installed.root / "opt/tiyi/.venv/bin/tiyi", exe)

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "tiyi-gateway.service"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = verify()
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    dropin = root / "etc/systemd/system/tiyi-gateway.service.d"
    dropin.mkdir()
    shutil.copy(REPO / "deploy/tiyi-gateway.service.d/notify.conf", dropin)
    result = verify()
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # the check is real: a misspelt setting in the drop-in is reported
    (dropin / "notify.conf").write_text("[Service]\nWatchdogSecs=30\n")
    assert "Unknown key" in verify().stderr
    exe.unlink()
    assert "is not executable" in verify().stderr


def test_second_run_changes_nothing_and_says_so(installed: Installed) -> None:
    before = snapshot(installed.root)
    again = install(installed.root, "--extras", "none")
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshot(installed.root) == before
    assert "已更改" not in again.stdout
    assert again.stdout.rstrip().endswith("已是最新，无需更改 / already installed: nothing changed")


def test_with_mosquitto_installs_the_broker_config_and_never_clobbers_it(installed: Installed) -> None:
    root = installed.root
    result = install(root, "--extras", "none", "--with-mosquitto")
    assert result.returncode == 0, result.stdout + result.stderr
    conf, acl = root / "etc/mosquitto/conf.d/tiyi.conf", root / "etc/mosquitto/tiyi.acl"
    assert conf.read_bytes() == (REPO / "deploy/mosquitto/tiyi.conf").read_bytes()
    assert acl.read_bytes() == (REPO / "deploy/mosquitto/tiyi.acl").read_bytes()
    assert owner_mode(conf) == (0, 0, 0o644) and owner_mode(acl) == (0, 0, 0o644)
    assert "/etc/mosquitto/certs/broker.crt is missing" in result.stdout
    # an operator's own broker configuration stays as it is
    conf.write_text("listener 1883 127.0.0.1\n")
    acl.write_text("user gw-x\ntopic write tiyi/v1/shenzhen/gw-x/#\n")
    again = install(root, "--extras", "none", "--with-mosquitto")
    assert again.returncode == 0
    assert conf.read_text() == "listener 1883 127.0.0.1\n"
    assert acl.read_text().startswith("user gw-x")
    assert "kept" in again.stdout and "nothing changed" in again.stdout


def test_existing_config_and_keys_are_kept_and_a_broken_config_is_reported(tmp_path: Path) -> None:
    root = make_root(tmp_path / "pi")
    (root / "etc/tiyi").mkdir(parents=True)
    config = root / "etc/tiyi/gateway.toml"
    config.write_text('[gateway]\nid = "gw-sz-gym-7"\nsource = "sim"\nregion = "atlantis"\n[chain]\nkind = "none"\n')
    keys = root / "var/lib/tiyi/keys"
    from gateway.keys import generate_keypair

    generate_keypair(keys)
    key_bytes = (keys / "gateway.key").read_bytes()

    broken = install(root)  # extras chosen from this file: sim source, no chain, so none
    assert broken.returncode == 1
    assert "extras []" in broken.stdout
    assert "gateway.region 'atlantis'" in broken.stderr and "问题 PROBLEM" in broken.stderr
    assert "not started: the configuration has problems" in broken.stdout
    assert config.read_text().count("atlantis") == 1  # never rewritten
    assert (keys / "gateway.key").read_bytes() == key_bytes
    assert "gateway.key (kept" in broken.stdout

    config.write_text(config.read_text().replace("atlantis", "foshan"))
    fixed = install(root)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "foshan" in config.read_text() and (keys / "gateway.key").read_bytes() == key_bytes
    uid, gid = int(ids(root, "passwd", "tiyi")[2]), int(ids(root, "group", "tiyi")[2])
    assert owner_mode(keys / "gateway.key") == (uid, gid, 0o600)  # handed to the service user, mode kept


@pytest.mark.parametrize(
    "config,extras,packages",
    [
        (None, "ble,evm", "bluez"),  # the shipped example: BLE source, EVM chain
        (
            '[gateway]\nsource = "sim"\n[chain]\nkind = "fisco2"\nurl = "http://n:20200"\ncontract = "0x1"\n',
            "evm",
            None,
        ),
        ('[gateway]\nsource = "ble"\n[chain]\nkind = "none"\n', "ble", "bluez"),
        ('[gateway]\nsource = "ble"\n[chain]\nkind = "none"\n[api]\nport = 8080\n', "ble,api", "bluez"),
        # The rehearsal of docs/operations.md: simulated straps on an emulated radio need the sim extra.
        ('[gateway]\nsource = "sim"\n[sim]\nradio = true\n[chain]\nkind = "none"\n[api]\n', "sim,api", None),
        ('[gateway]\nsource = "sim"\n[chain]\nkind = "none"\n', "", None),
        (
            '[gateway]\nsource = "sim"\n[chain]\nkind = "none"\n[[rollup]]\ntarget = "judicial"\nkind = "evm"\n',
            "evm",
            None,
        ),
    ],
)
def test_dry_run_chooses_extras_from_the_config_and_changes_nothing(
    tmp_path: Path, config: str | None, extras: str, packages: str | None
) -> None:
    root = make_root(tmp_path / "pi")
    if config is not None:
        (root / "etc/tiyi").mkdir()
        (root / "etc/tiyi/gateway.toml").write_text(config)
    before = snapshot(root)
    result = install(root, "--dry-run", "--with-mosquitto")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(root) == before
    assert f"extras [{extras}]" in result.stdout
    assert ("bluez" in result.stdout) == (packages == "bluez") and "mosquitto" in result.stdout
    for step in ("useradd", "keys generate", "systemctl", "enable"):
        assert step in result.stdout
    assert "[dry-run] useradd --prefix" in result.stdout
    assert "dry run: " in result.stdout and "change(s) would be made" in result.stdout


def test_help_and_bad_options() -> None:
    shown = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, check=False, timeout=30)
    assert shown.returncode == 0
    for text in ("--with-mosquitto", "--no-start", "--root", "--dry-run", "安装或更新", "Install or update"):
        assert text in shown.stdout
    for args in (["--bogus"], ["--root"], ["--root", "/nonexistent/dir"], ["--extras", "ble;rm"]):
        bad = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=30)
        assert bad.returncode == 2 and bad.stderr, args


def test_shellcheck_is_clean() -> None:
    require("shellcheck", "shellcheck")
    subprocess.run(["shellcheck", str(SCRIPT)], check=True, timeout=60)
