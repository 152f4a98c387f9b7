"""Where tokens come from and what a valid one is: the token functions, `tidegate control`'s
own flags and the CLI's (`--token-file`, `--token`, the env), role files, refusals and warnings."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.control.running import ControlProcess
from tests.support.procs import TIDEGATE, Proc, free_port, wait_until
from tidegate.control.tokens import MIN_TOKEN_LENGTH, Role, RoleTokens, TokenError, TokenFiles, checked, given_token

GOOD = "tg_" + "x" * 40


@pytest.mark.parametrize(
    "bad", ["", "   ", "\n\t", "short-token", "x" * (MIN_TOKEN_LENGTH - 1), "has a space inside ok", "tab\there-0123456789"]
)
def test_short_blank_or_spaced_tokens_are_refused_naming_the_source(bad: str) -> None:
    with pytest.raises(TokenError) as refused:
        checked(bad, "--token")
    assert str(refused.value).startswith("--token: ")


def test_a_token_file_is_read_stripped_and_a_readable_one_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(GOOD + "\n")
    os.chmod(path, 0o600)
    seen: list[str] = []
    warn = seen.append
    assert given_token(None, path, {}, warn) == GOOD and seen == []
    os.chmod(path, 0o644)
    assert given_token(None, path, {}, warn) == GOOD
    assert len(seen) == 1 and "chmod 600" in seen[0] and "0644" in seen[0]


def test_precedence_and_the_warnings_for_tokens_in_clear(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tg_from_the_file_0123456789")
    os.chmod(path, 0o600)
    seen: list[str] = []
    warn = seen.append
    env = {"TIDEGATE_TOKEN_FILE": str(path), "TIDEGATE_TOKEN": "tg_from_the_env_0123456789"}
    assert given_token(None, None, env, warn) == "tg_from_the_file_0123456789"
    assert given_token("tg_from_the_flag_0123456789", None, env, warn) == "tg_from_the_flag_0123456789"
    assert given_token(None, None, {"TIDEGATE_TOKEN": "tg_from_the_env_0123456789", "TIDEGATE_TOKEN_FILE": ""}, warn)
    assert given_token(None, None, {"TIDEGATE_TOKEN": ""}, warn) is None
    assert any("ps" in w for w in seen) and any("child process" in w for w in seen) and any("ignoring" in w for w in seen)
    with pytest.raises(TokenError, match="not both"):
        given_token(GOOD, path, {}, warn)
    with pytest.raises(TokenError, match="cannot read"):
        given_token(None, tmp_path / "missing", {}, warn)


def test_role_of_a_token() -> None:
    tokens = RoleTokens(admin="a" * 20, agent="b" * 20, read="c" * 20)
    assert [tokens.role_of(t) for t in ("a" * 20, "b" * 20, "c" * 20, "d" * 20, "")] == [Role.ADMIN, Role.AGENT, Role.READ, None, None]
    same = RoleTokens(admin="a" * 20, agent="a" * 20, read="a" * 20)
    assert same.role_of("a" * 20) == Role.ADMIN  # the highest role it is


def test_role_files_are_made_private_and_a_legacy_token_becomes_the_admin_one(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tg_legacy_token_0123456789\n")
    os.chmod(tmp_path / "token", 0o644)
    seen: list[str] = []
    warn = seen.append
    tokens, made = TokenFiles(tmp_path).ensure(None, warn)
    assert tokens.admin == "tg_legacy_token_0123456789" and made == [Role.AGENT, Role.READ]
    assert not (tmp_path / "token").exists() and any("moved" in w for w in seen)
    assert stat.S_IMODE(os.stat(tmp_path / "tokens").st_mode) == 0o700
    for role in ("admin", "agent", "read"):
        assert stat.S_IMODE(os.stat(tmp_path / "tokens" / role).st_mode) == 0o600
    again, made = TokenFiles(tmp_path).ensure("tg_given_admin_0123456789", warn)
    assert made == [] and again.admin == "tg_given_admin_0123456789" and (again.agent, again.read) == (tokens.agent, tokens.read)


# -- `tidegate control`'s flags, with real processes ------------------------------------------


def _control(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tidegate control` that must refuse to start (it answers at once)."""
    return subprocess.run(
        [*TIDEGATE, "control", "--port", str(free_port()), "--data", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TIDEGATE_TOKEN": "", "TIDEGATE_TOKEN_FILE": "", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--token", "short"], {}, "--token"),
        (["--token", "      "], {}, "--token"),
        ([], {"TIDEGATE_TOKEN": "short"}, "TIDEGATE_TOKEN"),
        (["--token-file", "/nonexistent/token"], {}, "--token-file"),
        (["--token", "tg_0123456789abcdef", "--token-file", "/x"], {}, "not both"),
        (["--cert", "/nonexistent.pem"], {}, "--key"),
    ],
)
def test_control_refuses_bad_tokens_and_tls_flags_with_a_message(tmp_path: Path, args: list[str], env: dict[str, str], named: str) -> None:
    result = _control(tmp_path, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


def test_control_takes_its_admin_token_from_a_file_and_warns_about_readable_token_files(tmp_path: Path) -> None:
    admin = tmp_path / "admin-token"
    admin.write_text("tg_admin_from_a_file_0123456789\n")
    os.chmod(admin, 0o600)
    (tmp_path / "data" / "tokens").mkdir(parents=True)
    agent = tmp_path / "data" / "tokens" / "agent"
    agent.write_text("tg_agent_kept_by_the_operator_0123\n")
    os.chmod(agent, 0o644)
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log", token=None, extra=["--token-file", str(admin)])
    try:
        output = plane.proc.output()
        assert f"from --token-file {admin}" in output and "tg_admin_from_a_file" not in output
        assert "chmod 600" in output and str(agent) in output
        rules = httpx.get(f"{plane.url}/v1/rules", headers={"Authorization": "Bearer tg_admin_from_a_file_0123456789"})
        events = httpx.post(
            f"{plane.url}/v1/events", json={"type": "x"}, headers={"Authorization": "Bearer tg_agent_kept_by_the_operator_0123"}
        )
        assert (rules.status_code, events.status_code) == (200, 201)
        assert not (tmp_path / "data" / "tokens" / "admin").exists(), "a given admin token is not written anywhere"
    finally:
        plane.stop()


def test_control_token_flag_warns_that_ps_shows_it(tmp_path: Path) -> None:
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log")
    try:
        assert "--token can be read by any local user" in plane.proc.output()
    finally:
        plane.stop()


# -- the CLI --------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": env.get("HOME", "/nonexistent")}
    return subprocess.run([*TIDEGATE, *args], capture_output=True, text=True, timeout=60, env={**base, **env})


def test_cli_takes_a_token_file_and_says_which_token_a_command_needs(tmp_path: Path) -> None:
    plane = ControlProcess(tmp_path / "data", tmp_path / "control.log", token=None)
    try:
        read = tmp_path / "data" / "tokens" / "read"
        status = _cli("status", "--control", plane.url, "--token-file", str(read), env={})
        assert status.returncode == 0, status.stderr
        assert "warning" not in status.stderr
        refused = _cli("rules", "delete", "ServiceSettings", "x", "--control", plane.url, "--token-file", str(read), env={})
        assert refused.returncode == 1 and "admin token" in refused.stderr
        blank = _cli("status", "--control", plane.url, env={"TIDEGATE_TOKEN": "   "})
        assert blank.returncode == 2 and "TIDEGATE_TOKEN" in blank.stderr and "empty" in blank.stderr
        short = _cli("status", "--control", plane.url, "--token", "abc", env={})
        assert short.returncode == 2 and "at least 16" in short.stderr
    finally:
        plane.stop()
    helps = {
        command: _cli(*command.split(), "--help", env={}).stdout
        for command in ("status", "rules list", "rules history", "rules apply", "rules rollback", "rules delete")
    }
    assert all("read token is enough" in helps[c] for c in ("status", "rules list", "rules history"))
    assert all("needs the admin token" in helps[c] for c in ("rules apply", "rules rollback", "rules delete"))


def test_status_uses_the_local_read_token_when_given_none(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    port = free_port()
    plane = Proc([*TIDEGATE, "control", "--port", str(port)], tmp_path / "control.log", env={**env, "TIDEGATE_TOKEN": ""})
    try:
        wait_until(lambda: "listening on" in plane.output(), timeout=30, what="control plane start")
        os.remove(tmp_path / "xdg" / "tidegate" / "tokens" / "admin")  # status needs only the read token
        result = _cli("status", "--control", f"http://127.0.0.1:{port}", env=env)
        assert result.returncode == 0, result.stderr
        refused = _cli("rules", "delete", "ServiceSettings", "x", "--control", f"http://127.0.0.1:{port}", env=env)
        assert refused.returncode == 1 and "admin token" in refused.stderr
    finally:
        plane.stop()
