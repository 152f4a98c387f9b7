"""Bearer tokens: the three roles, what a valid token is, where a process reads its own,
and the role files the control plane keeps.

Roles (admin ⊇ agent ⊇ read): **admin** may do everything (rules, rollouts, any
instance's state); **agent** registers instances and heartbeats, changes and
deregisters its own (each with its lease secret), watches, reads and posts
events; **read** sees the registry, the rules and the watch stream (the console,
`tidegate status`).

`tidegate control` keeps one token per role in `DATA/tokens/{admin,agent,read}`
(files 0600 in a 0700 directory, generated on first start). Every other process
reads its one token with `given_token`: `--token-file F`, else `--token T`, else
`$TIDEGATE_TOKEN_FILE`, else `$TIDEGATE_TOKEN`. A token on a command line is
readable by any local user (`ps`) and one in the environment by every child
process, so both work with a warning; a token file readable by group or others
is read with a warning. Starlette-free, so every process may import it cheaply.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from tidegate.errors import TidegateError

#: The shortest token accepted (a generated one is 46 characters).
MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "TIDEGATE_TOKEN"
TOKEN_FILE_ENV = "TIDEGATE_TOKEN_FILE"

Warn = Callable[[str], None]


class Role(IntEnum):
    """What a token may do; a higher role may do everything a lower one may."""

    READ = 1
    AGENT = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class TokenError(TidegateError, ValueError):
    """A token, or a token file, that cannot be used; the message names where it came from."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}" if source else reason)


def new_token() -> str:
    """A fresh bearer token. The `tg_` prefix keeps it from starting with '-' (which a
    command line would read as an option: `--token -abc`) and lets secret scanners spot it."""
    return "tg_" + secrets.token_urlsafe(32)


def checked(token: str, source: str) -> str:
    """`token` without surrounding whitespace, or TokenError naming `source` and what is wrong."""
    value = token.strip()
    if not value:
        raise TokenError(source, "the token is empty (or only whitespace)")
    if len(value) < MIN_TOKEN_LENGTH:
        raise TokenError(
            source,
            f"the token has {len(value)} characters; at least {MIN_TOKEN_LENGTH} are needed (a token `tidegate control` generates has 46)",
        )
    if any(not 0x21 <= ord(c) <= 0x7E for c in value):
        raise TokenError(source, "the token may hold only visible ASCII characters (no spaces, no control characters)")
    return value


def read_token_file(path: str | os.PathLike[str], source: str, warn: Warn) -> str:
    """The token in the file at `path`; warns (through `warn`) when group or others may read it."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as error:
        raise TokenError(source, f"cannot read token file {str(file)!r}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise TokenError(source, f"token file {str(file)!r} is not text") from None
    if stat.S_IMODE(mode) & 0o077:
        warn(
            f"token file {file} can be read by group or others (mode {stat.S_IMODE(mode):04o}): "
            f"anyone who can read it holds the token; make it private with `chmod 600 {file}`"
        )
    return checked(text, f"{source} ({file})")


def given_token(
    flag_token: str | None,
    flag_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    warn: Warn,
    flags: tuple[str, str] = ("--token", "--token-file"),
) -> str | None:
    """The token this process was given, or None when none: the flag's file, the flag,
    then `$TIDEGATE_TOKEN_FILE`, then `$TIDEGATE_TOKEN` (an empty variable is unset).

    A token given in clear (the flag or the variable) works with a warning."""
    token_flag, file_flag = flags
    if flag_token is not None and flag_file is not None:
        raise TokenError(token_flag, f"give {token_flag} or {file_flag}, not both")
    if flag_file is not None:
        return read_token_file(flag_file, file_flag, warn)
    if flag_token is not None:
        warn(f"a token given with {token_flag} can be read by any local user (`ps`): prefer {file_flag} FILE")
        return checked(flag_token, token_flag)
    env_file = environ.get(TOKEN_FILE_ENV, "").strip()
    env_token = environ.get(TOKEN_ENV, "")
    if env_file:
        if env_token:
            warn(f"both {TOKEN_FILE_ENV} and {TOKEN_ENV} are set: using the file, ignoring {TOKEN_ENV}")
        return read_token_file(env_file, TOKEN_FILE_ENV, warn)
    if env_token:
        warn(f"{TOKEN_ENV} is inherited by every child process: prefer {TOKEN_FILE_ENV} (a file only its owner can read)")
        return checked(env_token, TOKEN_ENV)
    return None


@dataclass(frozen=True, slots=True)
class RoleTokens:
    """The token of each role, as the control plane checks them."""

    admin: str
    agent: str
    read: str

    def role_of(self, given: str) -> Role | None:
        """The highest role whose token is `given` (each compared in constant time), or None."""
        presented = given.encode()
        found: Role | None = None
        for role, token in ((Role.READ, self.read), (Role.AGENT, self.agent), (Role.ADMIN, self.admin)):
            if secrets.compare_digest(presented, token.encode()):
                found = role
        return found


class TokenFiles:
    """`DATA/tokens/{admin,agent,read}`: one private file per role, made on first start."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.directory = self.data_dir / "tokens"

    def path(self, role: Role) -> Path:
        return self.directory / role.label

    def ensure(self, admin: str | None, warn: Warn) -> tuple[RoleTokens, list[Role]]:
        """Every role's token (the admin one is `admin` when given) and the roles whose file
        was made now. A token file from before the roles (`DATA/token`) becomes the admin one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(self.directory.stat().st_mode) & 0o077:
            os.chmod(self.directory, 0o700)
        legacy = self.data_dir / "token"
        if admin is None and legacy.exists() and not self.path(Role.ADMIN).exists():
            checked(legacy.read_text(), str(legacy))
            os.chmod(legacy, 0o600)
            os.replace(legacy, self.path(Role.ADMIN))
            warn(f"moved the token {legacy} to {self.path(Role.ADMIN)} (it is the admin token)")
        made: list[Role] = []
        values: dict[Role, str] = {}
        for role in (Role.ADMIN, Role.AGENT, Role.READ):
            if role == Role.ADMIN and admin is not None:
                values[role] = admin
                continue
            path = self.path(role)
            if path.exists():
                values[role] = read_token_file(path, f"the {role.label} token", warn)
            else:
                values[role] = new_token()
                write_private(path, values[role] + "\n")
                made.append(role)
        return RoleTokens(admin=values[Role.ADMIN], agent=values[Role.AGENT], read=values[Role.READ]), made


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only (also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)
