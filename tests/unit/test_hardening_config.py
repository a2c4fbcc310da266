"""Config, secrets and CLI edges found by trying to break cachewarm; no servers needed.

Malformed URLs, short passwords, odd config files and absurd values must all end as one
clear line (exit 2 for config), never a leak, a hang or an internal error.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
import structlog

from cachewarm import output
from cachewarm.config import NAME_MAX, load_settings
from cachewarm.errors import ConfigError, SourceError
from cachewarm.keys import Keys
from cachewarm.runlog import recording
from cachewarm.urls import WITHHELD, redact_url, scrub, split_password
from tests.helpers import cachewarm, one_line

PW = "Pw-5e1d9c"

# --- passwords in malformed URLs --------------------------------------------------------------

MALFORMED = [
    ("MYSQL", f"mysql:/shopuser:{PW}@db.example:3306/shop"),  # one slash
    ("MYSQL", f"mysql:shopuser:{PW}@db.example/shop"),  # none
    ("MYSQL", f"mysql:///shopuser:{PW}@db.example/shop"),  # three
    ("MYSQL", f"mysql://shopuser:{PW}/shop"),  # no '@host': the password reads as a port
    ("MYSQL", f"postgres://shopuser:{PW}@db.example/shop"),
    ("REDIS", f"redis:/shopuser:{PW}@cache.example/0"),
    ("REDIS", f"redis:shopuser:{PW}@cache.example/0"),
    ("REDIS", f"http://shopuser:{PW}@cache.example/0"),
]


@pytest.mark.parametrize(("section", "url"), MALFORMED)
def test_malformed_url_is_a_config_error_that_never_echoes_its_userinfo(
    section: str, url: str
) -> None:
    name = f"CACHEWARM_{section}_URL"
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: url})
    message = str(info.value)
    assert info.value.exit_code == 2
    assert message.startswith(f"{name}: [{section.lower()}] url ")
    assert PW not in message and "shopuser" not in message and PW[:4] not in message


@pytest.mark.parametrize(("section", "url"), MALFORMED[:1] + MALFORMED[-3:-2])
@pytest.mark.parametrize("command", [("run",), ("status", "--json"), ("show", "1")])
def test_malformed_url_stops_every_command_at_load(
    tmp_path: Path, section: str, url: str, command: tuple[str, ...]
) -> None:
    log = tmp_path / "runs.jsonl"
    env = {f"CACHEWARM_{section}_URL": url, "CACHEWARM_RUN_LOG": str(log)}
    result = cachewarm(*command, env=env)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("cachewarm: error: CACHEWARM_") and PW not in line
    assert result.stdout == "" and not log.exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"mysql:/shopuser:{PW}@db:3306/shop", "mysql:/***@db:3306/shop"),
        (f"redis:shopuser:{PW}@cache/0", "redis:***@cache/0"),
        (f"mysql:///shopuser:{PW}@db/shop", "mysql:///***@db/shop"),
        (f"mysql://shopuser:{PW}@db/shop", "mysql://shopuser:***@db/shop"),
        (f"redis://:p/a?s#s{PW}@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_redact_url_does_not_need_the_url_to_parse(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    password = split_password(url)[1]
    if "@" in url:
        assert password is not None and password.reveal().endswith(PW)
        assert PW not in split_password(url)[0]


def test_split_password_keeps_a_malformed_url_malformed() -> None:
    """Taking the password out must not repair the URL, or validation would pass it."""
    assert split_password(f"mysql:/u:{PW}@db/shop")[0] == "mysql:/u@db/shop"


# --- short passwords: redaction by structure, never by substring ------------------------------


@pytest.mark.parametrize(
    ("secret", "text"),
    [
        ("a", "cannot connect to MySQL at db:3306/shop as app: Access denied [1045]"),
        ("YES", "Access denied for user 'app'@'10.0.0.5' (using password: YES) [1045]"),
        ("9", "lock held by run 4f9c (pid 1932 on web-9)"),
    ],
)
def test_a_short_secret_in_outside_text_is_withheld_whole(secret: str, text: str) -> None:
    """Starring out each occurrence would show the secret by where the stars are."""
    shown = scrub(text, [secret])
    assert shown == WITHHELD
    assert "***" not in shown


def test_url_userinfo_in_outside_text_is_redacted_by_structure() -> None:
    text = f"connect failed: mysql:/app:{PW}@db:3306/shop and redis://:{PW}@cache/0 gone"
    assert scrub(text, []) == "connect failed: mysql:/***@db:3306/shop and redis://***@cache/0 gone"
    assert scrub("nothing secret here", ["a-long-password"]) == "nothing secret here"


def test_log_events_withhold_values_holding_a_secret_but_keep_event_names() -> None:
    stream = io.StringIO()
    output.configure(verbose=True, quiet=False, fmt="json", secrets=["e"], stream=stream)
    try:
        structlog.get_logger("cachewarm").warning(
            "warm.batch_failed", error="Access denied", where="redis://:x@h/0", n=3
        )
    finally:
        structlog.reset_defaults()
    event = json.loads(stream.getvalue())
    assert event["event"] == "warm.batch_failed" and event["level"] == "warning"
    assert event["error"] == WITHHELD and event["where"] == WITHHELD and event["n"] == 3


def test_run_log_error_with_a_short_secret_is_withheld(tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    with (
        contextlib.suppress(SourceError),
        recording(log, "run", Keys(), secrets_=["e"]),
    ):
        raise SourceError("MySQL at db:3306/shop: hot query failed: Table 'shop.hot' doesn't exist")
    record = json.loads(log.read_text())
    assert (record["status"], record["error"]) == ("failed", WITHHELD)


def test_cli_error_holding_a_short_secret_is_withheld(tmp_path: Path) -> None:
    """Starred out, 'hot_***uery is not set' would give the password away."""
    env = {"CACHEWARM_MYSQL_PASSWORD": "q", "CACHEWARM_RUN_LOG": str(tmp_path / "r.jsonl")}
    result = cachewarm("run", env=env)
    assert result.returncode == 2
    assert one_line(result.stderr) == f"cachewarm: error: {WITHHELD}"


# --- config files that are not ordinary ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "cachewarm.toml"
        os.mkfifo(path)  # nobody writes: reading it would block for ever
    elif kind == "device":
        path = Path(os.devnull)
    else:
        path = tmp_path
    try:
        result = cachewarm("status", env={"CACHEWARM_CONFIG": str(path)}, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"cachewarm hung reading a {kind} as its config")
    assert result.returncode == 2
    assert one_line(result.stderr) == f"cachewarm: error: config file {path} is not a regular file"


def test_config_file_with_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "cachewarm.toml"
    path.write_bytes(b'\xef\xbb\xbf[keys]\nprefix = "shop"\n')
    assert load_settings(path, env={}).keys.prefix == "shop"


# --- values that would fail later ----------------------------------------------------------------


def test_prefix_bounded_by_the_longest_file_name_built_from_it(tmp_path: Path) -> None:
    """The run log's name, `<prefix>-v1.runs.jsonl`, is the longest; NAME_MAX is 255."""
    longest = "p" * (NAME_MAX - len("-v1.runs.jsonl"))
    settings = load_settings(env={"CACHEWARM_KEYS_PREFIX": longest})
    (tmp_path / settings.runlog.name).touch()  # really fits
    (tmp_path / settings.lockfile.name).touch()
    too_long = longest + "p"
    with pytest.raises(OSError, match="File name too long") as fs:  # what every run hit
        (tmp_path / f"{too_long}-v1.runs.jsonl").touch()
    assert fs.value.errno == errno.ENAMETOOLONG
    with pytest.raises(ConfigError) as info:
        load_settings(env={"CACHEWARM_KEYS_PREFIX": too_long})
    assert str(info.value).startswith("CACHEWARM_KEYS_PREFIX: [keys] prefix is too long")
    assert f"at most {len(longest)} characters" in str(info.value)
    result = cachewarm("status", env={"CACHEWARM_KEYS_PREFIX": too_long})
    assert result.returncode == 2 and "[keys] prefix is too long" in one_line(result.stderr)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CACHEWARM_RUN_LOCK_TTL", "inf"),
        ("CACHEWARM_RUN_LOCK_TTL", "nan"),
        ("CACHEWARM_RUN_LOCK_TTL", "1e12"),
        ("CACHEWARM_WARM_CHANGED_OVERLAP", "inf"),
        ("CACHEWARM_WARM_CHANGED_OVERLAP", "nan"),
        ("CACHEWARM_WARM_CHANGED_OVERLAP", "1e15"),
        ("CACHEWARM_WARM_FULL_EVERY", "inf"),
        ("CACHEWARM_MYSQL_CONNECT_TIMEOUT", "inf"),
        ("CACHEWARM_MYSQL_CONNECT_TIMEOUT", "nan"),
        ("CACHEWARM_MYSQL_CONNECT_TIMEOUT", "1e9"),
        ("CACHEWARM_MYSQL_READ_TIMEOUT", "-inf"),
        ("CACHEWARM_REDIS_CONNECT_TIMEOUT", "nan"),
        ("CACHEWARM_REDIS_TIMEOUT", "inf"),
        ("CACHEWARM_REDIS_TIMEOUT", "0"),
        ("CACHEWARM_WARM_TTL", "100000000000000"),
    ],
)
def test_infinite_nan_or_absurd_durations_are_refused_naming_the_key(name: str, value: str) -> None:
    section, key = name.removeprefix("CACHEWARM_").lower().split("_", 1)
    with pytest.raises(ConfigError) as info:
        load_settings(env={name: value})
    assert str(info.value).startswith(f"{name}: [{section}] {key} must be between")


def test_non_finite_value_in_a_file_is_refused_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "cachewarm.toml"
    path.write_text("[run]\nlock_ttl = inf\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(f"{path}: [run] lock_ttl must be between 1 and")


# --- where a bad value came from ------------------------------------------------------------------


def test_range_error_names_the_file_env_var_or_flag_that_set_it(tmp_path: Path) -> None:
    path = tmp_path / "cachewarm.toml"
    path.write_text("[warm]\nlimit = 0\nbatch_size = 7\n")
    with pytest.raises(ConfigError) as from_file:
        load_settings(path, env={})
    assert str(from_file.value) == f"{path}: [warm] limit must be positive"
    with pytest.raises(ConfigError) as from_env:
        load_settings(path, env={"CACHEWARM_WARM_BATCH_SIZE": "0", "CACHEWARM_WARM_LIMIT": "5"})
    assert str(from_env.value) == (
        "CACHEWARM_WARM_BATCH_SIZE: [warm] batch_size must be between 1 and 100000"
    )
    with pytest.raises(ConfigError) as from_flag:
        load_settings(path, env={}, overrides={("warm", "limit"): -3})
    assert str(from_flag.value) == "--limit: [warm] limit must be positive"


def test_ttl_shorter_than_max_seconds_names_where_both_came_from(tmp_path: Path) -> None:
    path = tmp_path / "cachewarm.toml"
    path.write_text("[warm]\nttl = 700\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={}, overrides={("run", "max_seconds"): 800.0})
    assert str(info.value).startswith(
        f"{path}: [warm] ttl must be at least run.max_seconds (from --max-seconds)"
    )
    with pytest.raises(ConfigError) as by_default:
        load_settings(env={"CACHEWARM_RUN_MAX_SECONDS": "1000"})
    assert str(by_default.value).startswith(
        "built-in default: [warm] ttl must be at least run.max_seconds "
        "(from CACHEWARM_RUN_MAX_SECONDS)"
    )


# --- queries -----------------------------------------------------------------------------------


LONE_PERCENT = {
    "hot_query": ("SELECT id FROM products WHERE sku LIKE 'A-{}' LIMIT %(limit)s", "A-%"),
    "listing_query": (
        "SELECT id, name FROM products WHERE id IN %(ids)s AND name LIKE '{}x'",
        "%x",
    ),
    "changed_query": ("SELECT id FROM products WHERE updated_at >= %(since)s OR 1 {} 1", "1 % 1"),
}


@pytest.mark.parametrize("key", list(LONE_PERCENT))
def test_lone_percent_in_a_query_is_a_config_error_that_says_write_double(
    tmp_path: Path, key: str
) -> None:
    template, literal = LONE_PERCENT[key]
    path = tmp_path / "cachewarm.toml"
    path.write_text(f"[warm]\n{key} = {json.dumps(template.format('%'))}\n")
    result = cachewarm("--config", str(path), "status")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith(f"cachewarm: error: {path}: [warm] {key} has a lone '%'")
    assert "write %% for a literal %" in line
    path.write_text(f"[warm]\n{key} = {json.dumps(template.format('%%'))}\n")
    query = getattr(load_settings(path, env={}).warm, key)
    # what both drivers do with the parameters: the doubled % becomes the literal one
    assert literal in query % {"limit": "5", "ids": "(1)", "since": "'2026-01-01'"}


# --- shell completion ----------------------------------------------------------------------------


def test_shell_completion_script_is_produced_and_completes_commands() -> None:
    script = cachewarm(env={"_CACHEWARM_COMPLETE": "bash_source"})
    assert script.returncode == 0, script.stderr
    assert "complete -o nosort -F _cachewarm_completion cachewarm" in script.stdout
    completed = cachewarm(
        env={
            "_CACHEWARM_COMPLETE": "bash_complete",
            "COMP_WORDS": "cachewarm sta",
            "COMP_CWORD": "1",
        }
    )
    assert completed.stdout.split() == ["plain,status"]
    operations = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert 'eval "$(_CACHEWARM_COMPLETE=bash_source cachewarm)"' in operations
