"""Connection URLs and the secrets inside them: taken apart, checked, and shown safely.

A password is wrapped in a Secret as soon as it is read, and a URL is shown only through
redact_url, which never depends on the URL having parsed: a malformed URL is exactly the
one most likely to end up in an error message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

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


WITHHELD = "[message withheld: it contains a configured password]"

# A URL's userinfo inside free text: scheme, colon, any slashes, then everything up to
# the last '@' of the word. Matched whether or not the URL is well formed.
_USERINFO_IN_TEXT = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*:/*)[^\s'\"<>]*@")


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` made safe to show: URL userinfo redacted, or all of it withheld.

    For text we did not write (a driver's error, an exception): any URL's userinfo is
    replaced by structure. If a secret still occurs, the whole text is withheld.
    Replacing only the occurrences would give the secret away: a one-character
    password would star out that character everywhere, and a password such as YES
    would leave "(using password: ***)" where the reader knows what stood.
    """
    text = _USERINFO_IN_TEXT.sub(r"\1***@", text)
    return WITHHELD if any(secret and secret in text for secret in secrets) else text


def split_password(url: str) -> tuple[str, Secret | None]:
    """(the URL without its password, the password) for any URL, however malformed.

    The separator after the scheme is kept as written, so a malformed URL stays
    malformed and is refused by validation rather than repaired here.
    """
    parts = _userinfo(url)
    if parts is None or parts.password is None:
        return url, None
    user = f"{parts.user}@" if parts.user else ""
    return f"{parts.scheme}{user}{parts.rest}", Secret(unquote(parts.password))


@dataclass(frozen=True)
class _Userinfo:
    scheme: str  # with its ':' and whatever slashes followed it
    user: str
    password: str | None
    rest: str  # host and everything after it


def _userinfo(url: str) -> _Userinfo | None:
    """The URL's userinfo split by hand; None when there is none.

    urlsplit ends the host part at the first '/', '?' or '#', so an unencoded one in a
    password would leave the rest of the password in what is shown as the path; and it
    finds no userinfo at all after 'mysql:/' with one slash. The last '@' is a surer end
    of the user part: hosts, paths and queries here hold none.
    """
    found = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*:/*)(.*)@(.*)\Z", url, re.DOTALL)
    if not found:
        return None
    scheme, credentials, rest = found.groups()
    user, colon, password = credentials.partition(":")
    return _Userinfo(scheme, user, password if colon else None, rest)


def redact_url(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***, well formed or not.

    A URL that is not `scheme://user:password@...` loses its whole userinfo: in a
    malformed one, what looks like the user name may be part of the password.
    """
    parts = _userinfo(url)
    if parts is None:
        return url
    if parts.scheme.endswith("://") and not parts.scheme.endswith(":///"):
        shown = parts.user if parts.password is None else f"{parts.user}:***"
        return f"{parts.scheme}{shown}@{parts.rest}"
    return f"{parts.scheme}***@{parts.rest}"


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


def _split(url: str, section: str, schemes: tuple[str, ...], form: str) -> SplitResult:
    """The URL taken apart, or a ConfigError that says what is wrong without echoing it.

    A URL that does not parse is the one whose password nothing has recognised, so no
    part of it but the scheme is repeated back.
    """
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.\-]*):", url)
    if not scheme or scheme.group(1).lower() not in schemes:
        got = f", not {scheme.group(1)}:" if scheme else ""
        starts = " or ".join(f"{name}://" for name in schemes)
        raise ConfigError(f"[{section}] url must start with {starts}{got} (form: {form})")
    if not url[scheme.end() :].startswith("//"):
        raise ConfigError(
            f"[{section}] url is malformed: '//' must follow '{scheme.group(0)}' (form: {form})"
        )
    parts = urlsplit(url)
    if "@" in url and "@" not in parts.netloc:
        raise ConfigError(
            f"[{section}] url is malformed: the user part must follow '//' (form: {form})"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(
            f"[{section}] url has an invalid port: a number up to 65535 (form: {form})"
        ) from None
    return parts


MYSQL_FORM = "mysql://user:password@host:3306/database"
REDIS_FORM = "redis://[user]:password@host:6379/0"


def mysql_target(url: str, password: Secret | None) -> MySQLTarget:
    parts = _split(url, "mysql", ("mysql", "mariadb"), MYSQL_FORM)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(f"[mysql] url names no database (form: {MYSQL_FORM})")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"unix_socket"}
    if unknown:
        raise ConfigError(f"[mysql] url has unknown parameter(s): {', '.join(sorted(unknown))}")
    return MySQLTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else None,
        password=password,
        database=database,
        unix_socket=query.get("unix_socket"),
    )


def check_redis_url(url: str) -> None:
    """Check the Redis URL's shape; redis-py parses the rest."""
    parts = _split(url, "redis", ("redis", "rediss", "unix"), REDIS_FORM)
    if "password" in dict(parse_qsl(parts.query)):
        raise ConfigError(
            "[redis] url must not carry ?password=; use CACHEWARM_REDIS_PASSWORD instead"
        )
    database = parts.path.strip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        # redis-py would silently fall back to db 0 and write into the wrong database
        raise ConfigError("[redis] url names a database that is not a number; it must be a number")
