"""The systemd units and the logrotate snippet in deploy/ are accepted by the real tools.

`systemd-analyze verify` exits 0 even for an unknown key or a value it cannot parse (it
only prints a warning), so the tests require its output to be empty as well.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTALLED_CACHEWARM = "/opt/cachewarm/.venv/bin/cachewarm"


def _tool(name: str) -> str:
    """The tool's path; skip (naming what to install) only when it is really absent."""
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        reason = f"{name} is not installed (scripts/bootstrap installs it on Debian)"
        if os.environ.get("CI"):  # CI runs bootstrap: a missing tool is a broken install
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _verify(unit_dir: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("systemd-analyze"), "verify", *(str(unit_dir / u) for u in units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SERVICES = ("cachewarm.service", "cachewarm-follow.service")
CONFIG = "/etc/cachewarm.toml"
ENV_FILE = "/etc/cachewarm.env"


def _units_here(tmp_path: Path) -> Path:
    """The units as shipped, except ExecStart's binary: verify insists it exists."""
    here = str(Path(sys.executable).with_name("cachewarm"))
    for name in SERVICES:
        service = (DEPLOY / name).read_text()
        assert service.count(INSTALLED_CACHEWARM) == 1
        (tmp_path / name).write_text(service.replace(INSTALLED_CACHEWARM, here))
    shutil.copy(DEPLOY / "cachewarm.timer", tmp_path / "cachewarm.timer")
    return tmp_path


def test_services_and_timer_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(_units_here(tmp_path), *SERVICES, "cachewarm.timer")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_one_deploy_story_for_cron_and_both_units() -> None:
    """The same binary, config, env file (optional everywhere) and state directory."""
    cron_line = (ROOT / "crontab.example").read_text().strip().splitlines()[-1]
    assert f"{INSTALLED_CACHEWARM} --config {CONFIG} " in cron_line
    assert f"[ ! -e {ENV_FILE} ] || . {ENV_FILE};" in cron_line
    for name in SERVICES:
        service = (DEPLOY / name).read_text()
        assert f"ExecStart={INSTALLED_CACHEWARM} --config {CONFIG} " in service, name
        assert f"EnvironmentFile=-{ENV_FILE}\n" in service, name
        assert "Environment=XDG_STATE_HOME=%S\n" in service, name
        assert "StateDirectory=cachewarm\n" in service, name


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    units = _units_here(tmp_path)
    service = units / "cachewarm.service"
    service.write_text(service.read_text().replace("Type=oneshot", "Tpye=oneshot"))
    result = _verify(units, "cachewarm.service")
    assert "Unknown key" in result.stderr


def test_service_treats_a_skip_as_success_and_runs_the_crontab_command() -> None:
    service = (DEPLOY / "cachewarm.service").read_text()
    assert "SuccessExitStatus=75\n" in service
    cron_line = (ROOT / "crontab.example").read_text().strip().splitlines()[-1]
    assert f"{INSTALLED_CACHEWARM} --config {CONFIG} run" in cron_line
    assert f"ExecStart={INSTALLED_CACHEWARM} --config {CONFIG} run\n" in service


def test_logrotate_snippet_parses(tmp_path: Path) -> None:
    """logrotate --debug reads the snippet as shipped, run as the current user and group."""
    text = (DEPLOY / "logrotate.conf").read_text()
    assert "su cachewarm cachewarm" in text
    me = f"su {getpass.getuser()} {grp.getgrgid(os.getgid()).gr_name}"
    logs = tmp_path / "log"
    logs.mkdir(mode=0o700)
    (logs / "runs.jsonl").write_text('{"status":"ok"}\n')
    conf = tmp_path / "logrotate.conf"
    conf.write_text(
        text.replace("su cachewarm cachewarm", me).replace("/var/log/cachewarm", str(logs))
    )
    result = subprocess.run(
        [_tool("logrotate"), "--debug", "--state", str(tmp_path / "state"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr
    assert f"considering log {logs}/runs.jsonl" in result.stderr
