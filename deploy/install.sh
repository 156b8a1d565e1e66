#!/bin/bash
# Install or update a tiyi gateway on Debian 12 / Raspberry Pi OS Bookworm. Run as root from a checkout:
#   sudo deploy/install.sh [--with-mosquitto] [--no-start]
# Idempotent: every step looks before it acts, a second run changes nothing and says so. It never
# overwrites an operator's configuration, keys or broker configuration. See docs/operations.md.
set -eu -o pipefail

usage() {
    cat <<'EOF'
usage: deploy/install.sh [options]

安装或更新 tiyi 网关（Debian 12 / Raspberry Pi OS Bookworm，需 root）。
Install or update a tiyi gateway (Debian 12 / Raspberry Pi OS Bookworm, as root).

  --with-mosquitto  also install the Mosquitto broker and deploy/mosquitto/ (never replaces existing files)
                    同时安装 Mosquitto 及其配置（已有文件不会被覆盖）
  --no-start        install and enable the service, but do not start or restart it
                    安装并启用服务，但不启动
  --extras LIST     pip extras to install, e.g. "ble,evm" (default: chosen from the configuration)
  --root DIR        write every file under DIR instead of / (tests, images); installs no Debian packages
                    and starts nothing
  --dry-run         print each step and change nothing / 只显示步骤，不做任何更改
  -h, --help        this help / 显示帮助

What it does, each step only if needed:
  1. Debian packages: python3, python3-venv, systemd (+ bluez for BLE, + mosquitto with --with-mosquitto)
  2. system user "tiyi" in the groups tiyi and bluetooth
  3. /etc/tiyi/gateway.toml from deploy/gateway.example.toml, only if absent (0640 root:tiyi)
  4. /opt/tiyi/.venv with tiyi-edge and the extras its configuration needs (BLE: ble; EVM/FISCO chains: evm; [api]: api)
  5. the state directory (0700 tiyi) and the SM2 signing key via `tiyi keys generate`, only if absent
  6. `tiyi config check` of the configuration
  7. the systemd unit tiyi-gateway.service, enabled, and started (restarted after an upgrade)
Exit status: 0 installed (or nothing to change), 1 a step failed or the configuration has problems.

Environment (tests): TIYI_PYTHON (python3), TIYI_PIP_ARGS (extra pip options).
EOF
}

ROOT=""
DRY_RUN=0
NO_START=0
WITH_MOSQUITTO=0
EXTRAS=auto
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
PYTHON=${TIYI_PYTHON:-python3}
PIP_ARGS=${TIYI_PIP_ARGS:-}
CHANGES=0
PROBLEMS=0

while [ $# -gt 0 ]; do
    case "$1" in
        --with-mosquitto) WITH_MOSQUITTO=1 ;;
        --no-start) NO_START=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --extras) [ $# -ge 2 ] || { echo "--extras needs a value" >&2; exit 2; }; EXTRAS=$2; shift ;;
        --extras=*) EXTRAS=${1#--extras=} ;;
        --root) [ $# -ge 2 ] || { echo "--root needs a directory" >&2; exit 2; }; ROOT=$2; shift ;;
        --root=*) ROOT=${1#--root=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || { echo "--root $ROOT: no such directory" >&2; exit 2; }
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || ROOT=""
fi
case "$EXTRAS" in auto|none|"") ;; *[!a-z,]*) echo "--extras: comma-separated names, e.g. ble,evm" >&2; exit 2 ;; esac

# ---- output -------------------------------------------------------------------------------------------
step() { printf '\n==> %s / %s\n' "$1" "$2"; }
did() { CHANGES=$((CHANGES + 1)); printf '    %s 已更改 changed: %s\n' "$([ $DRY_RUN = 1 ] && echo '[dry-run]')" "$1"; }
same() { printf '    无需更改 unchanged: %s\n' "$1"; }
note() { printf '    注意 note: %s\n' "$1"; }
problem() { PROBLEMS=$((PROBLEMS + 1)); printf '    问题 PROBLEM: %s\n' "$1" >&2; }
die() { printf '\n错误 ERROR: %s\n' "$1" >&2; exit 1; }
# Every command that changes the system goes through run: --dry-run prints it instead.
run() {
    if [ $DRY_RUN = 1 ]; then printf '    [dry-run]'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}
p() { printf '%s%s' "$ROOT" "$1"; }  # a path on the target system

# ---- helpers ------------------------------------------------------------------------------------------
# uid/gid from the target's own databases (under --root the host's users are not the target's).
# In a dry run on a fresh system the user does not exist yet: its name stands in for the number.
uid_of() { awk -F: -v n="$1" '$1 == n { print $3; f = 1 } END { if (!f && d) print n }' d=$DRY_RUN "$(p /etc/passwd)" 2>/dev/null; }
gid_of() { awk -F: -v n="$1" '$1 == n { print $3; f = 1 } END { if (!f && d) print n }' d=$DRY_RUN "$(p /etc/group)" 2>/dev/null; }
user_exists() { awk -F: -v n="$1" '$1 == n { f = 1 } END { exit !f }' "$(p /etc/passwd)" 2>/dev/null; }
group_exists() { awk -F: -v n="$1" '$1 == n { f = 1 } END { exit !f }' "$(p /etc/group)" 2>/dev/null; }
in_group() { awk -F: -v g="$1" -v u="$2" '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) f = 1 } END { exit !f }' "$(p /etc/group)"; }
shadow_prefix() { if [ -n "$ROOT" ]; then printf -- '--prefix\n%s\n' "$ROOT"; fi; }

# owner of a path as "uid:gid" and its mode as 4 octal digits
stat_of() { stat -c '%u:%g %04a' "$1"; }

# ensure_dir PATH MODE USER GROUP
ensure_dir() {
    local path=$1 mode=$2 want
    want="$(uid_of "$3"):$(gid_of "$4") $mode"
    if [ ! -d "$(p "$path")" ]; then
        run install -d -m "$mode" -o "$(uid_of "$3")" -g "$(gid_of "$4")" "$(p "$path")"
        did "$path ($mode $3:$4)"
    elif [ "$(stat_of "$(p "$path")")" != "$want" ]; then
        run chown "$(uid_of "$3"):$(gid_of "$4")" "$(p "$path")"
        run chmod "$mode" "$(p "$path")"
        did "$path set to $mode $3:$4"
    else
        same "$path ($mode $3:$4)"
    fi
}

dpkg_installed() {
    local admin=()
    [ -z "$ROOT" ] || admin=(--admindir="$ROOT/var/lib/dpkg")
    dpkg-query "${admin[@]}" -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do dpkg_installed "$pkg" || missing+=("$pkg"); done
    if [ ${#missing[@]} = 0 ]; then
        same "Debian packages: $*"
    elif [ -n "$ROOT" ]; then
        note "not installed under --root (install them in the image): ${missing[*]}"
    else
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
        did "installed ${missing[*]}"
    fi
}

# install_file SRC DEST MODE USER GROUP POLICY: POLICY keep (never replace: an operator's file) or update
# (ours: replace when it differs, e.g. the systemd unit after an upgrade). Prints what happened; returns 0
# when the file was written.
install_file() {
    local src=$1 dest=$2 mode=$3 user=$4 group=$5 policy=$6 target
    target=$(p "$dest")
    if [ -e "$target" ] || [ -L "$target" ]; then
        if cmp -s "$src" "$target"; then
            same "$dest"
        elif [ "$policy" = keep ]; then
            same "$dest (kept: it differs from $(basename "$src"), which is never copied over it / 保留现有文件)"
        else
            run install -m "$mode" -o "$(uid_of "$user")" -g "$(gid_of "$group")" "$src" "$target"
            did "$dest updated"
            return 0
        fi
        return 1
    fi
    run install -m "$mode" -o "$(uid_of "$user")" -g "$(gid_of "$group")" "$src" "$target"
    did "$dest ($mode $user:$group)"
    return 0
}

# A value from the configuration, read with Python's own TOML parser (python3 is installed by then).
config_value() {
    "$PYTHON" - "$CONFIG_SRC" "$1" <<'EOF'
import sys, tomllib
path, what = sys.argv[1], sys.argv[2]
try:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
    data = {}  # reported by `tiyi config check` below; defaults meanwhile
gw = data.get("gateway") if isinstance(data.get("gateway"), dict) else {}
chain = data.get("chain") if isinstance(data.get("chain"), dict) else {}
rollups = [r for r in data.get("rollup", []) if isinstance(r, dict)] if isinstance(data.get("rollup"), list) else []
if what == "extras":
    extras = []
    if gw.get("source", "sim") == "ble":
        extras.append("ble")
    kinds = {chain.get("kind", "inproc")} | {r.get("kind", "inproc") for r in rollups}
    if kinds & {"evm", "fisco2"}:
        extras.append("evm")
    sim = data.get("sim") if isinstance(data.get("sim"), dict) else {}
    if "inproc" in kinds or (gw.get("source", "sim") == "sim" and sim.get("radio") is True):
        extras.append("sim")  # the in-process chain of the demo, or simulated straps on an emulated radio
    if isinstance(data.get("api"), dict):
        extras.append("api")  # the admin API, dashboard and /metrics
    print(",".join(extras))
elif what == "source":
    print(gw.get("source", "sim"))
elif what == "state_dir":
    print(gw.get("state_dir", "/var/lib/tiyi") if isinstance(gw.get("state_dir"), str) else "/var/lib/tiyi")
elif what == "key_file":
    print(gw.get("key_file", "") if isinstance(gw.get("key_file"), str) else "")
EOF
}

source_digest() {
    (cd "$SRC" && find pyproject.toml edge gateway anchoring firmware_sim ingest -type f \
        \( -name '*.py' -o -name '*.toml' -o -name '*.json' -o -name '*.sol' \) -not -path '*/__pycache__/*' \
        -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

systemd_running() { [ -z "$ROOT" ] && [ -d /run/systemd/system ]; }

# ---- 0. preconditions ---------------------------------------------------------------------------------
printf 'tiyi 网关安装 / tiyi gateway install%s\n' "$([ -n "$ROOT" ] && echo " (root: $ROOT)")"
[ $DRY_RUN = 1 ] && printf '试运行：不做任何更改 / dry run: nothing is changed\n'
if [ "$(id -u)" != 0 ] && [ $DRY_RUN = 0 ]; then
    die "请以 root 运行 / run as root: sudo $0 $*"
fi
{ [ -f "$SRC/pyproject.toml" ] && [ -f "$HERE/gateway.example.toml" ]; } || die "run this script from a tiyi-edge checkout ($SRC)"
if [ -r "$(p /etc/os-release)" ] && ! grep -q '^VERSION_CODENAME=bookworm' "$(p /etc/os-release)"; then
    note "written for Debian 12 / Raspberry Pi OS Bookworm; this system is $(sed -n 's/^PRETTY_NAME=//p' "$(p /etc/os-release)" | tr -d '"')"
fi

# ---- 1. packages --------------------------------------------------------------------------------------
step "安装系统软件包" "Debian packages"
ensure_packages python3 python3-venv systemd
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python 3.11 or newer is needed"

# ---- 2. user ------------------------------------------------------------------------------------------
step "创建系统用户 tiyi" "system user tiyi"
mapfile -t PREFIX < <(shadow_prefix)
if ! group_exists bluetooth; then
    run groupadd "${PREFIX[@]}" --system bluetooth
    did "group bluetooth (BlueZ's D-Bus policy admits its members)"
fi
if ! user_exists tiyi; then
    run useradd "${PREFIX[@]}" --system --user-group --home-dir /var/lib/tiyi --no-create-home \
        --shell /usr/sbin/nologin --comment "tiyi gateway" --groups bluetooth tiyi
    did "user tiyi (groups tiyi, bluetooth)"
elif ! in_group bluetooth tiyi; then
    run usermod "${PREFIX[@]}" --append --groups bluetooth tiyi
    did "user tiyi added to group bluetooth"
else
    same "user tiyi (groups tiyi, bluetooth)"
fi
# ---- 3. configuration ---------------------------------------------------------------------------------
step "配置文件" "configuration /etc/tiyi/gateway.toml"
ensure_dir /etc/tiyi 0750 root tiyi
if install_file "$HERE/gateway.example.toml" /etc/tiyi/gateway.toml 0640 root tiyi keep; then
    note "edit gateway.id, region, [mqtt] and [chain] in /etc/tiyi/gateway.toml / 请编辑网关编号、地区、MQTT 与区块链设置"
fi
CONFIG_SRC=$(p /etc/tiyi/gateway.toml)
[ -e "$CONFIG_SRC" ] || CONFIG_SRC="$HERE/gateway.example.toml"  # dry run on a fresh system
[ "$EXTRAS" != auto ] || EXTRAS=$(config_value extras)
[ "$EXTRAS" != none ] || EXTRAS=""
SOURCE=$(config_value source)
STATE_DIR=$(config_value state_dir)
KEY_FILE=$(config_value key_file)
printf '    source %s, extras [%s], state %s\n' "$SOURCE" "$EXTRAS" "$STATE_DIR"

step "蓝牙与消息服务软件包" "packages for this configuration"
WANT=()
[ "$SOURCE" != ble ] || WANT+=(bluez)
[ $WITH_MOSQUITTO = 0 ] || WANT+=(mosquitto)
if [ ${#WANT[@]} -gt 0 ]; then ensure_packages "${WANT[@]}"; else same "none needed"; fi

# ---- 4. Python environment ----------------------------------------------------------------------------
step "安装 Python 环境" "Python environment /opt/tiyi/.venv"
VENV=/opt/tiyi/.venv
ensure_dir /opt/tiyi 0755 root root
STAMP="version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/pyproject.toml") extras=$EXTRAS source=$(source_digest)"
VENV_CHANGED=0
if [ ! -x "$(p $VENV)/bin/python" ]; then
    run "$PYTHON" -m venv "$(p $VENV)"
    did "$VENV created"
fi
if [ "$(cat "$(p $VENV)/.tiyi-install" 2>/dev/null)" = "$STAMP" ]; then
    same "tiyi-edge [$EXTRAS] ($STAMP)"
else
    # Build from a copy of the sources, so that pip's build directory never lands in the checkout.
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    (cd "$SRC" && tar -cf - --exclude=__pycache__ pyproject.toml README.md edge gateway anchoring firmware_sim ingest) \
        | tar -xf - -C "$BUILD"
    SPEC=$BUILD
    [ -z "$EXTRAS" ] || SPEC="${BUILD}[${EXTRAS}]"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of options
    run "$(p $VENV)/bin/pip" install -q --disable-pip-version-check --upgrade $PIP_ARGS "$SPEC"
    if [ $DRY_RUN = 0 ]; then printf '%s\n' "$STAMP" > "$(p $VENV)/.tiyi-install"; fi
    did "tiyi-edge [$EXTRAS] installed ($STAMP)"
    VENV_CHANGED=1
fi
TIYI="$(p $VENV)/bin/tiyi"

# ---- 5. state directory and keys ----------------------------------------------------------------------
step "数据目录与签名密钥" "state directory and signing key"
ensure_dir "$STATE_DIR" 0700 tiyi tiyi
KEY_DIR="$STATE_DIR/keys"
if [ -n "$KEY_FILE" ]; then
    KEY_DIR=$(dirname "$KEY_FILE")
    [ "$(basename "$KEY_FILE")" = gateway.key ] || note "key_file $KEY_FILE is not named gateway.key: generate it yourself (tiyi keys generate writes gateway.key)"
fi
ensure_dir "$KEY_DIR" 0700 tiyi tiyi
if [ -e "$(p "$KEY_DIR/gateway.key")" ]; then
    same "$KEY_DIR/gateway.key (kept / 保留现有密钥)"
else
    run "$TIYI" keys generate --dir "$(p "$KEY_DIR")" | sed 's/^/    /'
    run chown "$(uid_of tiyi):$(gid_of tiyi)" "$(p "$KEY_DIR/gateway.key")" "$(p "$KEY_DIR/gateway.pub")"
    did "$KEY_DIR/gateway.key (0600) and gateway.pub: back them up (docs/operations.md) / 请备份密钥"
fi
for f in gateway.key gateway.pub; do
    [ -e "$(p "$KEY_DIR/$f")" ] || continue
    want="$(uid_of tiyi):$(gid_of tiyi)"
    [ "$(stat -c '%u:%g' "$(p "$KEY_DIR/$f")")" = "$want" ] || { run chown "$want" "$(p "$KEY_DIR/$f")"; did "$KEY_DIR/$f owned by tiyi"; }
done

# ---- 6. configuration check ---------------------------------------------------------------------------
step "检查配置" "tiyi config check"
if [ $DRY_RUN = 1 ] && [ ! -x "$TIYI" ]; then
    printf '    [dry-run] %s config check %s\n' "$TIYI" "$CONFIG_SRC"
else
    # Under --root the paths in the file name the target system, not this one: check the file alone.
    FILES=()
    [ -z "$ROOT" ] || FILES=(--no-files)
    if OUT=$("$TIYI" config check "${FILES[@]}" "$CONFIG_SRC" 2>&1); then
        same "$(printf '%s' "$OUT" | head -n 1)"
    else
        printf '%s\n' "$OUT" | sed 's/^/    /' >&2
        problem "配置有误，服务不会启动 / the configuration has problems: fix $CONFIG_SRC and run this script again"
    fi
fi

# ---- 7. systemd unit ----------------------------------------------------------------------------------
step "系统服务" "systemd unit tiyi-gateway.service"
UNIT_CHANGED=0
ensure_dir /etc/systemd/system 0755 root root
if install_file "$HERE/tiyi-gateway.service" /etc/systemd/system/tiyi-gateway.service 0644 root root update; then
    UNIT_CHANGED=1
    if systemd_running; then run systemctl daemon-reload; fi
fi
SYSTEMCTL=(systemctl)
[ -z "$ROOT" ] || SYSTEMCTL=(systemctl --root="$ROOT")
if [ "$("${SYSTEMCTL[@]}" is-enabled tiyi-gateway.service 2>/dev/null)" = enabled ]; then
    same "tiyi-gateway.service enabled"
else
    run "${SYSTEMCTL[@]}" enable --quiet tiyi-gateway.service
    did "tiyi-gateway.service enabled (starts at boot / 开机自动启动)"
fi

# ---- 8. Mosquitto -------------------------------------------------------------------------------------
if [ $WITH_MOSQUITTO = 1 ]; then
    step "MQTT 服务器 Mosquitto" "Mosquitto broker configuration"
    ensure_dir /etc/mosquitto 0755 root root
    ensure_dir /etc/mosquitto/conf.d 0755 root root
    install_file "$HERE/mosquitto/tiyi.conf" /etc/mosquitto/conf.d/tiyi.conf 0644 root root keep || true
    install_file "$HERE/mosquitto/tiyi.acl" /etc/mosquitto/tiyi.acl 0644 root root keep || true
    for f in /etc/mosquitto/certs/broker.crt /etc/mosquitto/certs/broker.key /etc/mosquitto/certs/ca.crt \
             /etc/mosquitto/tiyi.passwd; do
        [ -e "$(p "$f")" ] || note "$f is missing: Mosquitto will not start with tiyi.conf until it exists (docs/operations.md)"
    done
    note "regenerate the ACL for your gateways: tiyi broker acl --gateway REGION/ID ... -o /etc/mosquitto/tiyi.acl"
fi

# ---- 9. start -----------------------------------------------------------------------------------------
step "启动服务" "start the service"
if [ $NO_START = 1 ]; then
    same "not started (--no-start): systemctl start tiyi-gateway"
elif [ $PROBLEMS -gt 0 ]; then
    note "not started: the configuration has problems (see above) / 配置有误，未启动"
elif ! systemd_running; then
    note "systemd is not running here${ROOT:+ (--root)}: the service starts at the next boot"
elif [ $VENV_CHANGED = 1 ] || [ $UNIT_CHANGED = 1 ]; then
    run systemctl restart tiyi-gateway.service
    did "tiyi-gateway.service (re)started; follow it with: journalctl -u tiyi-gateway -f"
elif systemctl is-active --quiet tiyi-gateway.service; then
    same "tiyi-gateway.service running"
else
    run systemctl start tiyi-gateway.service
    did "tiyi-gateway.service started; follow it with: journalctl -u tiyi-gateway -f"
fi

# ---- summary ------------------------------------------------------------------------------------------
echo
if [ $PROBLEMS -gt 0 ]; then
    printf '完成，但有 %d 个问题需要处理 / done with %d problem(s) to fix (see above)\n' "$PROBLEMS" "$PROBLEMS"
    exit 1
elif [ $CHANGES = 0 ]; then
    printf '已是最新，无需更改 / already installed: nothing changed\n'
elif [ $DRY_RUN = 1 ]; then
    printf '试运行：将进行 %d 项更改 / dry run: %d change(s) would be made\n' "$CHANGES" "$CHANGES"
else
    printf '安装完成：%d 项更改 / installed: %d change(s)\n' "$CHANGES" "$CHANGES"
    printf '下一步 next: docs/operations.md (配对设备 pair a device: sudo -u tiyi %s devices pair --config /etc/tiyi/gateway.toml ADDRESS)\n' "$VENV/bin/tiyi"
fi
