"""Settings: TOML file, then `CACHEWARM_<SECTION>_<KEY>` env vars, then flags, into one object.

Resolved once at the entry point and passed down, so no other module reads the
environment. Anything unknown or mistyped is a ConfigError naming its source, because a
typo in a cron job's config should fail loudly on the first run, not be silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

ENV_PREFIX = "CACHEWARM_"
CONFIG_ENV = "CACHEWARM_CONFIG"


class Secret:
    """A password that never shows itself in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class MySQLSettings:
    url: str = "mysql://root@127.0.0.1:3306/shop"
    password: Secret | None = None  # else the URL's, else ~/.my.cnf's
    driver: str = "auto"  # "pymysql", or "mysqlclient" (C, from cachewarm[fast]); auto prefers it
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_verify_identity: bool = False
    # A replica for the warm's hot and listing queries; same user, password and TLS.
    replica_url: str = ""
    replica_max_wait: float = 1.0  # seconds a batch waits for the replica, then reads the primary


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    connect_timeout: float = 5.0
    timeout: float = 30.0
    ssl_ca_certs: str | None = None


@dataclass(frozen=True)
class WarmSettings:
    hot_query: str = ""
    listing_query: str = ""
    limit: int = 1000
    ttl: int = 900
    ttl_jitter: float = 0.1  # fraction of ttl added at random so keys don't expire together
    batch_size: int = 2000
    max_payload_bytes: int = 1024 * 1024
    # Incremental warms: ids whose listing may have changed since %(since)s (a DATETIME).
    changed_query: str = ""
    changed_overlap: float = 300.0  # seconds re-read before the watermark: late commits
    full_every: float = 3600.0  # seconds between full warms, which also catch deletions


@dataclass(frozen=True)
class KeySettings:
    prefix: str = "cachewarm"
    version: int = 1


@dataclass(frozen=True)
class RunSettings:
    lockfile: str = ""  # "" = per-user default, see default_state_dir()
    log: str = ""
    lock: str = "file"  # or "redis", for several cron hosts
    lock_ttl: float = 60.0
    max_seconds: float = 600.0
    metrics_file: str = ""  # Prometheus textfile-collector file; "" = none


@dataclass(frozen=True)
class FollowSettings:
    """`cachewarm follow`: which binlog row changes invalidate which products."""

    # table -> column holding the product id, e.g. {"products" = "id"}
    tables: dict[str, str] = field(default_factory=dict)
    # table -> query returning product ids for the changed rows' primary keys, %(ids)s
    queries: dict[str, str] = field(default_factory=dict)
    schema: str = ""  # "" = the database in [mysql] url
    server_id: int = 0  # 0 = derived from host, prefix and version (see binlog.py)
    checkpoint: str = ""  # "" = per-user state dir, <prefix>-v<version>.follow.json
    rewarm: bool = False
    max_delay: float = 0.1  # seconds a changed id may wait to be batched
    max_batch: int = 10_000  # ids per invalidation batch
    max_outage: float = 300.0  # seconds MySQL or Redis may stay unreachable before exiting
    metrics_textfile: str = ""  # the follower's Prometheus textfile; "" = none


@dataclass(frozen=True)
class Settings:
    mysql: MySQLSettings = field(default_factory=MySQLSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    warm: WarmSettings = field(default_factory=WarmSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    run: RunSettings = field(default_factory=RunSettings)
    follow: FollowSettings = field(default_factory=FollowSettings)
    source: str = "defaults"  # where the file came from, for messages
    notes: tuple[str, ...] = ()  # warnings found while loading, logged by the caller

    @property
    def lockfile(self) -> Path:
        return (
            Path(self.run.lockfile)
            if self.run.lockfile
            else default_state_dir() / (f"{self.keys.prefix}-v{self.keys.version}.lock")
        )

    @property
    def follow_checkpoint(self) -> Path:
        return (
            Path(self.follow.checkpoint)
            if self.follow.checkpoint
            else default_state_dir() / f"{self.keys.prefix}-v{self.keys.version}.follow.json"
        )

    @property
    def runlog(self) -> Path:
        return (
            Path(self.run.log)
            if self.run.log
            else default_state_dir() / (f"{self.keys.prefix}-v{self.keys.version}.runs.jsonl")
        )

    def secrets(self) -> list[str]:
        """Every secret value this config holds, for redaction of any output."""
        return [s.reveal() for s in (self.mysql.password, self.redis.password) if s and s.reveal()]


SECTIONS: dict[str, type[Any]] = {
    "mysql": MySQLSettings,
    "redis": RedisSettings,
    "warm": WarmSettings,
    "keys": KeySettings,
    "run": RunSettings,
    "follow": FollowSettings,
}

Overrides = Mapping[tuple[str, str], object]


def default_state_dir() -> Path:
    """Per-user, never a shared /tmp: a private directory defeats symlink tricks."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cachewarm"


def load_settings(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Overrides | None = None,
) -> Settings:
    """Resolve settings with precedence flag > env > file > default."""
    env = os.environ if env is None else env
    raw: dict[str, dict[str, tuple[object, str]]] = {name: {} for name in SECTIONS}
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    source = "defaults"
    notes: list[str] = []
    if path is not None:
        source = str(path)
        for section, values in _read_toml(Path(path)).items():
            for key, value in values.items():
                raw[section][key] = (value, f"{path}: [{section}] {key}")
        if _holds_password(raw) and Path(path).stat().st_mode & 0o077:
            notes.append(
                f"config file {path} holds a password and is readable by others; chmod 600 it"
            )
    for name, value in env.items():
        target = _env_target(name)
        if target:
            raw[target[0]][target[1]] = (value, name)
    for (section, key), value in (overrides or {}).items():
        if value is not None:
            raw[section][key] = (value, f"--{key.replace('_', '-')}")
    built = {name: _build(cls, raw[name]) for name, cls in SECTIONS.items()}
    settings = _absorb_url_passwords(Settings(**built, source=source, notes=tuple(notes)))
    validate(settings)
    return settings


def _holds_password(raw: dict[str, dict[str, tuple[object, str]]]) -> bool:
    """Whether the file (not env or flags) gave a password, directly or inside a URL."""
    for section in ("mysql", "redis"):
        for key, (value, origin) in raw[section].items():
            if origin.startswith(ENV_PREFIX) or not isinstance(value, str):
                continue
            if key == "password" and value:
                return True
            if key == "url" and _split_password(value)[1] is not None:
                return True
    return False


def _absorb_url_passwords(s: Settings) -> Settings:
    """Move a password written in a URL into a Secret, so no repr or message can show it.

    An explicit `password` (file or env) wins over the URL's.
    """
    mysql_url, mysql_pw = _split_password(s.mysql.url)
    redis_url, redis_pw = _split_password(s.redis.url)
    return replace(
        s,
        mysql=replace(s.mysql, url=mysql_url, password=s.mysql.password or mysql_pw),
        redis=replace(s.redis, url=redis_url, password=s.redis.password or redis_pw),
    )


def _split_password(url: str) -> tuple[str, Secret | None]:
    """(the URL without its password, the password) for any URL, however malformed."""
    scheme, user, password, rest = _userinfo(url)
    if password is None:
        return url, None
    return f"{scheme}://{user + '@' if user else ''}{rest}", Secret(unquote(password))


def _userinfo(url: str) -> tuple[str, str, str | None, str]:
    """(scheme, user, password or None, host and the rest), split by hand.

    urlsplit ends the host part at the first '/', '?' or '#', so an unencoded one in a
    password would leave the rest of the password in what is shown as the path. The
    last '@' is a surer end of the user part: hosts, paths and queries here hold none.
    """
    scheme, sep, rest = url.partition("://")
    credentials, at, host_and_rest = rest.rpartition("@")
    if not sep or not at:
        return scheme, "", None, rest
    user, colon, password = credentials.partition(":")
    return scheme, user, password if colon else None, host_and_rest


def _read_toml(path: Path) -> dict[str, dict[str, object]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} unreadable: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    result: dict[str, dict[str, object]] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {section} must be a [{section}] table")
        known = {f.name for f in fields(SECTIONS[section])}
        for key in values:
            if key not in known:
                raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
        result[section] = values
    return result


def _env_target(name: str) -> tuple[str, str] | None:
    """CACHEWARM_<SECTION>_<KEY> -> (section, key); other CACHEWARM_* names are not settings.

    A known section with an unknown key is an error: that is a typo worth stopping for.
    """
    if not name.startswith(ENV_PREFIX):
        return None
    section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
    if section not in SECTIONS:
        return None
    if key not in {f.name for f in fields(SECTIONS[section])}:
        raise ConfigError(f"unknown environment variable {name}")
    return section, key


def _build(cls: type[Any], values: dict[str, tuple[object, str]]) -> Any:
    hints = typing.get_type_hints(cls, globalns=globals())
    kwargs = {key: _coerce(hints[key], value, origin) for key, (value, origin) in values.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: object, origin: str) -> object:
    """Turn a TOML, env (string) or flag value into the field's type, or say why not."""
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    target = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if optional and value in ("", None):
        return None
    if target == dict[str, str]:
        return _string_table(value, origin)
    if target is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: expected a string")
        return Secret(value)
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: expected true or false, got {value!r}")
    if target is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise ConfigError(f"{origin}: expected an integer, got {value!r}")
    if target is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{origin}: expected a number, got {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: expected a string, got {value!r}")
    return value


def _string_table(value: object, origin: str) -> dict[str, str]:
    """A TOML inline table of strings, or the same as a JSON object in an env var."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{origin}: expected a JSON object, got {value!r}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{origin}: expected a table of strings, got {value!r}")
    return dict(value)


def validate(s: Settings) -> None:
    """Range and shape checks that types alone cannot express."""
    checks: list[tuple[bool, str]] = [
        (s.warm.limit > 0, "[warm] limit must be positive"),
        (s.warm.ttl > 0, "[warm] ttl must be positive (seconds)"),
        (0 <= s.warm.ttl_jitter <= 1, "[warm] ttl_jitter must be between 0 and 1"),
        (0 < s.warm.batch_size <= 100_000, "[warm] batch_size must be between 1 and 100000"),
        (s.warm.max_payload_bytes > 0, "[warm] max_payload_bytes must be positive"),
        (s.warm.changed_overlap >= 0, "[warm] changed_overlap must not be negative"),
        (s.warm.full_every >= 0, "[warm] full_every must not be negative"),
        (s.keys.version > 0, "[keys] version must be a positive integer"),
        (
            bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", s.keys.prefix)),
            "[keys] prefix may only hold letters, digits, '_', '-' and '.'",
        ),
        (s.run.lock in ("file", "redis"), '[run] lock must be "file" or "redis"'),
        (
            s.mysql.driver in ("auto", "pymysql", "mysqlclient"),
            '[mysql] driver must be "auto", "pymysql" or "mysqlclient"',
        ),
        (s.run.lock_ttl >= 1, "[run] lock_ttl must be at least 1 second"),
        (0 < s.run.max_seconds < 10**7, "[run] max_seconds must be positive and finite"),
        (
            s.warm.ttl >= s.run.max_seconds,
            "[warm] ttl must be at least run.max_seconds: the hot list lives ttl from the start",
        ),
        (
            s.mysql.connect_timeout > 0 and s.mysql.read_timeout > 0,
            "[mysql] timeouts must be positive",
        ),
        (s.redis.connect_timeout > 0 and s.redis.timeout > 0, "[redis] timeouts must be positive"),
        (0 < s.follow.max_delay <= 60, "[follow] max_delay must be between 0 and 60 seconds"),
        (s.follow.max_batch > 0, "[follow] max_batch must be positive"),
        (s.follow.max_outage >= 0, "[follow] max_outage must not be negative"),
        (0 <= s.follow.server_id < 2**32, "[follow] server_id must be between 1 and 4294967295"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{s.source}: {message}")
    mysql_target(s.mysql)
    redis_target(s.redis)
    if s.mysql.replica_url:
        if _split_password(s.mysql.replica_url)[1] is not None:
            raise ConfigError(
                "[mysql] replica_url must not carry a password; the replica uses [mysql] password"
            )
        mysql_target(replace(s.mysql, url=s.mysql.replica_url))
    if s.mysql.replica_max_wait < 0:
        raise ConfigError(f"{s.source}: [mysql] replica_max_wait must not be negative")


def require_queries(s: Settings) -> None:
    """Only commands that read MySQL need the queries; `show` and `status` do not."""
    if not s.warm.hot_query.strip():
        raise ConfigError(f"{s.source}: [warm] hot_query is not set")
    if not s.warm.listing_query.strip():
        raise ConfigError(f"{s.source}: [warm] listing_query is not set")
    if "%(ids)s" not in s.warm.listing_query:
        raise ConfigError(f"{s.source}: [warm] listing_query must contain %(ids)s")
    if s.warm.changed_query and "%(since)s" not in s.warm.changed_query:
        raise ConfigError(f"{s.source}: [warm] changed_query must contain %(since)s")


@dataclass(frozen=True)
class MySQLTarget:
    """The MySQL URL taken apart; `password` stays wrapped until the driver needs it."""

    host: str
    port: int
    user: str | None
    password: Secret | None
    database: str
    unix_socket: str | None

    def display(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"MySQL at {where}/{self.database}" + (f" as {self.user}" if self.user else "")


def mysql_target(s: MySQLSettings) -> MySQLTarget:
    parts = urlsplit(s.url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ConfigError(f"[mysql] url must start with mysql://, got {redact_url(s.url)!r}")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"[mysql] url names no database: {redact_url(s.url)!r}")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"unix_socket"}
    if unknown:
        raise ConfigError(f"[mysql] url has unknown parameter(s): {', '.join(sorted(unknown))}")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ConfigError(f"[mysql] url has an invalid port: {redact_url(s.url)!r}") from None
    return MySQLTarget(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=s.password,
        database=database,
        unix_socket=query.get("unix_socket"),
    )


def redis_target(s: RedisSettings) -> str:
    """Check the Redis URL's shape; redis-py parses the rest."""
    parts = urlsplit(s.url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"[redis] url must start with redis://, rediss:// or unix://, got {redact_url(s.url)!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"[redis] url has an invalid port: {redact_url(s.url)!r}") from None
    if "password" in dict(parse_qsl(parts.query)):
        raise ConfigError(
            "[redis] url must not carry ?password=; use CACHEWARM_REDIS_PASSWORD instead"
        )
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        # redis-py would silently fall back to db 0 and write into the wrong database
        raise ConfigError(f"[redis] url names database {database!r}; it must be a number")
    return redact_url(s.url)


def redact_url(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    scheme, user, password, rest = _userinfo(url)
    return url if password is None else f"{scheme}://{user}:***@{rest}"
