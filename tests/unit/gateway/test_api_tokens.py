"""API tokens: shown once, stored hashed, checked in constant time; a damaged file is refused whole; the
[api] section is parsed like every other (each error names its key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.api_tokens import TokenError, TokenStore, add_token, remove_token
from gateway.cli import main
from gateway.config import ConfigError, parse_config


def test_the_file_keeps_only_a_hash_and_the_token_checks(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens"
    token = add_token(path, "front-desk")
    text = path.read_text()
    assert token not in text and text.startswith("front-desk sha256:")
    assert path.stat().st_mode & 0o777 == 0o600
    store = TokenStore.load(path)
    assert store.check(token) == "front-desk"
    for forged in ("", token[:-1], token + "x", token.upper(), "x" * 10_000, text.split(":")[1].strip()):
        assert store.check(forged) is None


def test_names_are_unique_and_plain(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens"
    add_token(path, "a")
    with pytest.raises(TokenError, match="exists already"):
        add_token(path, "a")
    with pytest.raises(TokenError, match="token name"):
        add_token(path, "bad name\nintruder sha256:" + "0" * 64)
    assert remove_token(path, "a") and not remove_token(path, "a")
    assert TokenStore.load(path).names == []


@pytest.mark.parametrize(
    "line",
    ["intruder plaintext", "x sha256:" + "0" * 63, "x sha256:" + "g" * 64, "x md5:" + "0" * 64, "sha256:" + "0" * 64],
)
def test_a_damaged_file_is_refused_whole(tmp_path: Path, line: str) -> None:
    path = tmp_path / "api-tokens"
    add_token(path, "good")
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(TokenError, match=r"api-tokens:2"):
        TokenStore.load(path)


def test_the_api_section(tmp_path: Path) -> None:
    cfg = parse_config({"gateway": {"state_dir": str(tmp_path)}, "api": {"port": 9000}})
    assert cfg.api is not None and (cfg.api.listen, cfg.api.port) == ("127.0.0.1", 9000)
    assert cfg.api_token_path == tmp_path / "api-tokens"
    assert parse_config({}).api is None  # no [api]: no API
    with pytest.raises(ConfigError, match=r"api.port must be 1..65535"):
        parse_config({"api": {"port": 70_000}})
    with pytest.raises(ConfigError, match=r"unknown setting \[api\] tokens"):
        parse_config({"api": {"tokens": "x"}})


def test_tiyi_api_token_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "gw.toml"
    conf.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[api]\ntoken_file = "{tmp_path}/tok"\n')
    assert main(["api", "token", "add", "--config", str(conf), "desk"]) == 0
    token = capsys.readouterr().out.strip()
    assert TokenStore.load(tmp_path / "tok").check(token) == "desk"
    assert main(["api", "token", "list", "--config", str(conf)]) == 0
    assert capsys.readouterr().out == "desk\n"
    assert main(["api", "token", "remove", "--config", str(conf), "desk"]) == 0
    assert main(["api", "token", "remove", "--config", str(conf), "desk"]) == 1
