"""Settings: TOML file, then `CACHEWARM_<SECTION>_<KEY>` env vars, then flags, into one object.

Resolved once at the entry point and passed down, so no other module reads the
environment. Anything unknown or mistyped is a ConfigError naming its source, because a
typo in a cron job's config should fail loudly on the first run, not be silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import ConfigError
from .keys import Keys
from .urls import Secret, check_redis_url, mysql_target, split_password

ENV_PREFIX = "CACHEWARM_"
CONFIG_ENV = "CACHEWARM_CONFIG"

Driver = Literal["auto", "pymysql", "mysqlclient"]
RedisMode = Literal["single", "cluster", "sentinel"]
LockKind = Literal["file", "redis"]


@dataclass(frozen=True)
class MySQLSettings:
    url: str = "mysql://root@127.0.0.1:3306/shop"
    password: Secret | None = None  # else the URL's, else ~/.my.cnf's
    driver: Driver = (
        "auto"  # "pymysql", or "mysqlclient" (C, from cachewarm[fast]); auto prefers it
    )
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
    mode: RedisMode = "single"  # or "cluster" (url and nodes seed the slot map), or "sentinel"
    nodes: tuple[str, ...] = ()  # cluster: more seed nodes, "host:port"
    sentinels: tuple[str, ...] = ()  # sentinel: "host:port" of each sentinel
    service_name: str = ""  # sentinel: the master's name, as in `sentinel monitor NAME`
    password: Secret | None = None
    sentinel_password: Secret | None = None  # the sentinels' own requirepass, if they have one
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
    # Listing columns holding JSON text (JSON_ARRAYAGG, JSON_OBJECT, a JSON column) that
    # go into the listing as JSON, not as a string. Env: comma-separated.
    json_columns: tuple[str, ...] = ()
    # The blast-radius limit: the share of the hot set a run may reject by its own checks
    # (json_columns not JSON, over max_payload_bytes) and still remove those listings and
    # publish. Past it the run fails (exit 1) and keeps both. 0: any rejection fails.
    max_rejected_share: float = 0.05
    # Misses readers report to the stream `{prefix}:v{version}:misses` (docs/readers.md):
    # `run` and `follow` warm those products. Nothing is created while no reader reports.
    miss_queue: bool = True
    miss_queue_max: int = 10_000  # the MAXLEN ~ readers XADD with; the warmer trims to it too
    miss_per_run: int = 10_000  # entries one run takes at most, so a flood cannot stretch it
    # Seconds an entry taken by a run or follower may stay unacknowledged before another
    # takes it over (its taker crashed). Above the time one batch takes to read and write.
    miss_claim_after: float = 60.0


@dataclass(frozen=True)
class RunSettings:
    lockfile: str = ""  # "" = per-user default, see default_state_dir()
    log: str = ""
    lock: LockKind = "file"  # or "redis", for several cron hosts
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
    server_id: int = 0  # 0 = derived from host, prefix and version (see binlog/server.py)
    checkpoint: str = ""  # "" = per-user state dir, <prefix>-v<version>.follow.json
    rewarm: bool = False
    max_delay: float = 0.1  # seconds a changed id may wait to be batched
    max_batch: int = 10_000  # ids per invalidation batch
    max_outage: float = 300.0  # seconds MySQL or Redis may stay unreachable before exiting
    # seconds after which each invalidation is repeated (the commit-visibility window); 0 = off
    reinvalidate_after: float = 1.0
    metrics_textfile: str = ""  # the follower's Prometheus textfile; "" = none


@dataclass(frozen=True)
class AuditSettings:
    """`cachewarm audit`: how many listings it checks, how it rules out edits in flight."""

    # Hot-list ids checked by default; 1000 catches a 0.3% stale share 95% of the time.
    sample: int = 1000
    # Seconds before a listing that differs is compared again: an edit whose invalidation
    # (or rewarm) is still on its way is consistent by then, and raises no alarm.
    recheck_after: float = 2.0
    # The audit's own Prometheus textfile-collector file; "" = none. Not [run]
    # metrics_file: each writer replaces its file whole, so two commands sharing one would
    # erase each other's series. A name of its own, as no other section uses it.
    textfile: str = ""


@dataclass(frozen=True)
class Settings:
    mysql: MySQLSettings = field(default_factory=MySQLSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    warm: WarmSettings = field(default_factory=WarmSettings)
    keys: Keys = field(default_factory=Keys)
    run: RunSettings = field(default_factory=RunSettings)
    follow: FollowSettings = field(default_factory=FollowSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    source: str = "defaults"  # where the file came from, for messages
    notes: tuple[str, ...] = ()  # warnings found while loading, logged by the caller
    # (section, key) -> the file, env var or flag that set it, for messages
    origins: Mapping[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

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
        held = (self.mysql.password, self.redis.password, self.redis.sentinel_password)
        return [s.reveal() for s in held if s and s.reveal()]


SECTIONS: dict[str, type[Any]] = {
    "mysql": MySQLSettings,
    "redis": RedisSettings,
    "warm": WarmSettings,
    "keys": Keys,
    "run": RunSettings,
    "follow": FollowSettings,
    "audit": AuditSettings,
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
    origins: dict[tuple[str, str], str] = {}
    if path is not None:
        source = str(path)
        values_by_section, mode = _read_toml(Path(path))
        for section, values in values_by_section.items():
            for key, value in values.items():
                raw[section][key] = (value, f"{path}: [{section}] {key}")
                origins[section, key] = str(path)
        if _holds_password(raw) and mode & 0o077:
            notes.append(
                f"config file {path} holds a password and is readable by others; chmod 600 it"
            )
    for name, value in env.items():
        target = _env_target(name)
        if target:
            raw[target[0]][target[1]] = (value, name)
            origins[target] = name
    for (section, key), value in (overrides or {}).items():
        if value is not None:
            flag = f"--{key.replace('_', '-')}"
            raw[section][key] = (value, flag)
            origins[section, key] = flag
    built = {name: _build(cls, raw[name]) for name, cls in SECTIONS.items()}
    settings = _absorb_url_passwords(
        Settings(**built, source=source, notes=tuple(notes), origins=origins)
    )
    validate(settings)
    return settings


def _holds_password(raw: dict[str, dict[str, tuple[object, str]]]) -> bool:
    """Whether the file (not env or flags) gave a password, directly or inside a URL."""
    for section in ("mysql", "redis"):
        for key, (value, origin) in raw[section].items():
            if origin.startswith(ENV_PREFIX) or not isinstance(value, str):
                continue
            if key in ("password", "sentinel_password") and value:
                return True
            if key == "url" and split_password(value)[1] is not None:
                return True
    return False


def _absorb_url_passwords(s: Settings) -> Settings:
    """Move a password written in a URL into a Secret, so no repr or message can show it.

    An explicit `password` (file or env) wins over the URL's.
    """
    mysql_url, mysql_pw = split_password(s.mysql.url)
    redis_url, redis_pw = split_password(s.redis.url)
    return replace(
        s,
        mysql=replace(s.mysql, url=mysql_url, password=s.mysql.password or mysql_pw),
        redis=replace(s.redis, url=redis_url, password=s.redis.password or redis_pw),
    )


def _read_toml(path: Path) -> tuple[dict[str, dict[str, object]], int]:
    """The file's sections and its permission bits.

    Only a regular file is read: opened without blocking and checked on the open
    descriptor, so a FIFO or a device (or a file swapped for one) cannot hang a cron
    run. A UTF-8 byte order mark, as some Windows editors write, is accepted.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} unreadable: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise ConfigError(f"config file {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            text = f.read().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} unreadable: {exc}") from None
    try:
        data = tomllib.loads(text)
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
    return result, stat.S_IMODE(mode)


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
    if typing.get_origin(target) is tuple:
        return _string_list(value, origin)
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


NAME_MAX = 255  # bytes in one file name on Linux filesystems
TIMEOUT_MAX_S = 86_400  # a connect or read that may wait longer than a day waits on a dead server
LONGEST_S = 10**8  # about three years: past this a duration is a typo, and overflows some clients
METRICS_TMP_EXTRA = len("..4194304.tmp")  # metrics.write's temp name around the file's name


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


def _string_list(value: object, origin: str) -> tuple[str, ...]:
    """A TOML array of strings, or (from the environment) a comma-separated string."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{origin}: expected a list of strings, got {value!r}")


def validate(s: Settings) -> None:
    """Range and shape checks that types alone cannot express.

    Each message starts with the `[section] key` it is about and is prefixed with
    where that value came from. Ranges are written `low <= x <= high`, so NaN and
    infinity fail them too.
    """
    checks: list[tuple[bool, str]] = [
        (s.warm.limit > 0, "[warm] limit must be positive"),
        (0 < s.warm.ttl <= LONGEST_S, f"[warm] ttl must be between 1 and {LONGEST_S} seconds"),
        (0 <= s.warm.ttl_jitter <= 1, "[warm] ttl_jitter must be between 0 and 1"),
        (
            0 <= s.warm.max_rejected_share <= 1,
            "[warm] max_rejected_share must be between 0 and 1",
        ),
        (0 < s.warm.batch_size <= 100_000, "[warm] batch_size must be between 1 and 100000"),
        (s.warm.max_payload_bytes > 0, "[warm] max_payload_bytes must be positive"),
        (
            0 <= s.warm.changed_overlap <= LONGEST_S,
            f"[warm] changed_overlap must be between 0 and {LONGEST_S} seconds",
        ),
        (
            0 <= s.warm.full_every <= LONGEST_S,
            f"[warm] full_every must be between 0 and {LONGEST_S} seconds",
        ),
        (s.keys.version > 0, "[keys] version must be a positive integer"),
        (s.warm.miss_queue_max > 0, "[warm] miss_queue_max must be positive"),
        (
            0 < s.warm.miss_per_run <= 1_000_000,
            "[warm] miss_per_run must be between 1 and 1000000",
        ),
        (
            0 < s.warm.miss_claim_after <= TIMEOUT_MAX_S,
            f"[warm] miss_claim_after must be between 0 and {TIMEOUT_MAX_S} seconds",
        ),
        ("id" not in s.warm.json_columns, "[warm] json_columns cannot hold `id`"),
        (
            bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", s.keys.prefix)),
            "[keys] prefix may only hold letters, digits, '_', '-' and '.'",
        ),
        (s.run.lock in typing.get_args(LockKind), '[run] lock must be "file" or "redis"'),
        (
            s.mysql.driver in typing.get_args(Driver),
            '[mysql] driver must be "auto", "pymysql" or "mysqlclient"',
        ),
        (
            1 <= s.run.lock_ttl <= TIMEOUT_MAX_S,
            f"[run] lock_ttl must be between 1 and {TIMEOUT_MAX_S} seconds",
        ),
        (0 < s.run.max_seconds < 10**7, "[run] max_seconds must be positive and finite"),
        (0 < s.follow.max_delay <= 60, "[follow] max_delay must be between 0 and 60 seconds"),
        (s.follow.max_batch > 0, "[follow] max_batch must be positive"),
        (s.follow.max_outage >= 0, "[follow] max_outage must not be negative"),
        (
            0 <= s.follow.reinvalidate_after <= 60,
            "[follow] reinvalidate_after must be between 0 and 60 seconds",
        ),
        (0 <= s.follow.server_id < 2**32, "[follow] server_id must be between 1 and 4294967295"),
        (s.mysql.replica_max_wait >= 0, "[mysql] replica_max_wait must not be negative"),
        (s.audit.sample > 0, "[audit] sample must be positive"),
        (
            0 <= s.audit.recheck_after <= 3600,
            "[audit] recheck_after must be between 0 and 3600 seconds",
        ),
    ]
    timeouts = (
        ("mysql", "connect_timeout", s.mysql.connect_timeout),
        ("mysql", "read_timeout", s.mysql.read_timeout),
        ("redis", "connect_timeout", s.redis.connect_timeout),
        ("redis", "timeout", s.redis.timeout),
    )
    checks += [
        (0 < value <= TIMEOUT_MAX_S, f"[{section}] {key} must be between 0 and {TIMEOUT_MAX_S} s")
        for section, key, value in timeouts
    ]
    for key in ("hot_query", "listing_query", "changed_query"):
        checks.append(
            (
                "%" not in re.sub(r"%%|%\(\w+\)s", "", getattr(s.warm, key)),
                f"[warm] {key} has a lone '%': queries take %(name)s parameters, "
                "so write %% for a literal % (as in LIKE 'a%%')",
            )
        )
    checks += _file_name_checks(s)
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{_origin(s, message)}: {message}")
    if not s.warm.ttl >= s.run.max_seconds:
        raise ConfigError(
            f"{_origin(s, '[warm] ttl')}: [warm] ttl must be at least run.max_seconds "
            f"(from {_origin(s, '[run] max_seconds')}): the hot list lives ttl from the start"
        )
    for section, check in (
        ("mysql", lambda: mysql_target(s.mysql.url, s.mysql.password)),
        ("redis", lambda: check_redis_url(s.redis.url)),
    ):
        try:
            check()
        except ConfigError as exc:
            raise ConfigError(f"{_origin(s, f'[{section}] url')}: {exc}") from None
    if s.mysql.replica_url:
        if split_password(s.mysql.replica_url)[1] is not None:
            raise ConfigError(
                "[mysql] replica_url must not carry a password; the replica uses [mysql] password"
            )
        mysql_target(s.mysql.replica_url, s.mysql.password)
    _check_redis_mode(s)


def _origin(s: Settings, message: str) -> str:
    """Where the value a message is about came from: its file, env var or flag."""
    about = re.match(r"\[(\w+)\] (\w+)", message)
    if not about:
        return s.source
    return s.origins.get((about.group(1), about.group(2)), "built-in default")


def _file_name_checks(s: Settings) -> list[tuple[bool, str]]:
    """File names built from keys.prefix, or given, must fit NAME_MAX, or every run fails."""
    checks = []
    files = [("lockfile", s.run.lockfile, s.lockfile.name), ("log", s.run.log, s.runlog.name)]
    for key, given, name in files:
        size = len(os.fsencode(name))
        if given:
            message = f"[run] {key}'s file name is {size} bytes; at most {NAME_MAX} fit"
        else:
            most = NAME_MAX - (size - len(s.keys.prefix))
            message = (
                f"[keys] prefix is too long for the {key} file name; at most {most} characters"
            )
        checks.append((size <= NAME_MAX, message))
    most = NAME_MAX - METRICS_TMP_EXTRA
    for name, given in (
        ("[run] metrics_file", s.run.metrics_file),
        ("[audit] textfile", s.audit.textfile),
    ):
        if given:
            size = len(os.fsencode(Path(given).name))
            checks.append((size <= most, f"{name}'s file name must be at most {most} bytes"))
    return checks


def _check_redis_mode(s: Settings) -> None:
    """Combinations of [redis] keys that cannot mean what the user wants."""
    r = s.redis
    database = urlsplit(r.url).path.strip("/")
    checks: list[tuple[bool, str]] = [
        (
            r.mode in typing.get_args(RedisMode),
            f'[redis] mode must be "single", "cluster" or "sentinel", got {r.mode!r}',
        ),
        (r.mode == "cluster" or not r.nodes, '[redis] nodes applies only to mode = "cluster"'),
        (
            r.mode == "sentinel" or not (r.sentinels or r.service_name or r.sentinel_password),
            '[redis] sentinels, service_name and sentinel_password apply only to mode = "sentinel"',
        ),
        (
            r.mode != "cluster" or not r.url.startswith("unix:"),
            "[redis] url must be redis:// or rediss:// for a Redis Cluster",
        ),
        (
            r.mode != "cluster" or database in ("", "0"),
            f"[redis] url names database {database}; a Redis Cluster has only database 0",
        ),
        (
            r.mode != "sentinel" or bool(r.sentinels),
            '[redis] sentinels is empty for mode = "sentinel"',
        ),
        (
            r.mode != "sentinel" or bool(r.service_name),
            '[redis] service_name is not set for mode = "sentinel"',
        ),
    ]
    for node in (*r.nodes, *r.sentinels):
        host, _, port = node.rpartition(":")
        checks.append(
            (
                bool(host) and port.isdigit() and 0 < int(port) < 65536,
                f"[redis] {node!r} in nodes/sentinels is not host:port",
            )
        )
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{s.source}: {message}")


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
