"""Connection URLs and the secrets inside them: taken apart, checked, and shown safely.

A password is wrapped in a Secret as soon as it is read, and a URL is shown only through
redact_url, which never depends on the URL having parsed: a malformed URL is exactly the
one most likely to end up in an error message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError


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


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def split_password(url: str) -> tuple[str, Secret | None]:
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


def redact_url(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    scheme, user, password, rest = _userinfo(url)
    return url if password is None else f"{scheme}://{user}:***@{rest}"


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


def mysql_target(url: str, password: Secret | None) -> MySQLTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ConfigError(f"[mysql] url must start with mysql://, got {redact_url(url)!r}")
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"[mysql] url names no database: {redact_url(url)!r}")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"unix_socket"}
    if unknown:
        raise ConfigError(f"[mysql] url has unknown parameter(s): {', '.join(sorted(unknown))}")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ConfigError(f"[mysql] url has an invalid port: {redact_url(url)!r}") from None
    return MySQLTarget(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=password,
        database=database,
        unix_socket=query.get("unix_socket"),
    )


def check_redis_url(url: str) -> None:
    """Check the Redis URL's shape; redis-py parses the rest."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"[redis] url must start with redis://, rediss:// or unix://, got {redact_url(url)!r}"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"[redis] url has an invalid port: {redact_url(url)!r}") from None
    if "password" in dict(parse_qsl(parts.query)):
        raise ConfigError(
            "[redis] url must not carry ?password=; use CACHEWARM_REDIS_PASSWORD instead"
        )
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        # redis-py would silently fall back to db 0 and write into the wrong database
        raise ConfigError(f"[redis] url names database {database!r}; it must be a number")
