"""The installs under test: throwaway virtualenvs of the working tree, checked on import.

| install | built with                           | cachewarm must pick                       |
|---------|--------------------------------------|-------------------------------------------|
| default | `pip install .`                      | PyMySQL, orjson, hiredis (dependencies)   |
| wheels  | `pip install . orjson hiredis`       | PyMySQL, orjson, hiredis (no compiler)    |
| fast    | `pip install '.[fast]'`              | mysqlclient, orjson, hiredis              |

Dependencies are installed once per (pyproject.toml, install) and reused; the cachewarm
package itself is reinstalled on every run from a copy of the working tree, and its
sources must hash the same as cachewarm/*.py: the code measured is the code checked out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proc import CHILD_ENV, ROOT, WORK, log

# What `pip install` needs from the working tree; copied so builds never touch it.
SNAPSHOT = ("pyproject.toml", "README.md", "LICENSE", "cachewarm")
DISTS = ("cachewarm", "click", "PyMySQL", "redis", "structlog", "mysqlclient", "orjson", "hiredis")
OPTIONAL_MODULES = {"mysqlclient": "MySQLdb", "orjson": "orjson", "hiredis": "hiredis"}
DEFAULT_WHEELS = ("orjson", "hiredis")  # dependencies of `pip install .` (on x86_64/arm64)


@dataclass(frozen=True)
class Spec:
    """How one install is built and what cachewarm must pick inside it."""

    extra: str  # appended to the source path: "" or "[fast]"
    also: tuple[str, ...]  # further packages installed next to it
    picks: tuple[str, str, str]  # driver, JSON encoder, Redis reply parser

    @property
    def command(self) -> str:
        return shlex.join(["pip", "install", f".{self.extra}", *self.also])

    @property
    def optional(self) -> set[str]:
        """The optional dists this install must (and the others must not) import."""
        if self.extra == "[fast]":
            return set(OPTIONAL_MODULES)
        return {*self.also, *DEFAULT_WHEELS} & set(OPTIONAL_MODULES)


SPECS = {
    "default": Spec("", (), ("pymysql", "orjson", "hiredis")),
    "wheels": Spec("", ("orjson", "hiredis"), ("pymysql", "orjson", "hiredis")),
    "fast": Spec("[fast]", (), ("mysqlclient", "orjson", "hiredis")),
}

# Run inside an install (python -I): what it imports and which fast paths cachewarm takes.
PROBE = """
import hashlib, importlib.metadata as md, importlib.util, json, pathlib, sys
import cachewarm, cachewarm.mysql.encode as enc, cachewarm.mysql.source as src, redis.utils

def tree_hash(pkg):
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(p.relative_to(pkg).as_posix().encode() + b"\\0" + p.read_bytes() + b"\\0")
    return h.hexdigest()

def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None

pkg = pathlib.Path(cachewarm.__file__).parent
print(json.dumps({
    "python": sys.version.split()[0],
    "package_dir": str(pkg),
    "source_sha256": tree_hash(pkg),
    "versions": {d: version(d) for d in DISTS},
    "importable": {d: importlib.util.find_spec(m) is not None for d, m in MODULES.items()},
    "driver_auto": src.driver_name("auto"),
    "json": "stdlib json" if enc.fast_dumps is enc.stdlib_dumps else "orjson",
    "redis_parser": "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure Python",
}))
"""


def tree_hash(pkg: Path) -> str:
    """The same digest as PROBE's, of the working tree's package."""
    digest = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        digest.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass
class Install:
    name: str
    venv: Path
    info: dict[str, Any]
    reused: bool

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def cachewarm(self) -> str:
        return str(self.venv / "bin" / "cachewarm")

    def describe(self) -> str:
        versions: dict[str, str | None] = self.info["versions"]
        have = ", ".join(f"{d} {v}" for d, v in versions.items() if v)
        missing = [d for d, v in versions.items() if not v]
        text = f"`{self.name}` install (`{self.spec.command}`, "
        text += os.path.relpath(self.venv, ROOT)
        text += ", reused" if self.reused else ", built this run"
        text += f"): {have}"
        if missing:
            text += f"; not installed (imports checked): {', '.join(missing)}"
        return (
            text + f"; cachewarm picks driver {self.info['driver_auto']}, "
            f"{self.info['json']}, redis-py parser {self.info['redis_parser']}"
        )


def _pip(venv: Path, *args: str) -> None:
    argv = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=WORK)
    if proc.returncode != 0:
        output = proc.stdout[-2000:] + proc.stderr[-3000:]
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{output}")


def snapshot_source(src: Path) -> Path:
    """A copy of what the package is built from, as it is in the working tree now.

    Outside the repository: builds leave nothing in the tree, and no second copy of the
    package sits where ruff or mypy look.
    """
    src.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    return src


def ensure_install(name: str, src: Path, *, rebuild: bool = False) -> Install:
    """The virtualenv for one install with this tree's cachewarm in it, checked."""
    spec = SPECS[name]
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.command.encode())
    venv = WORK / f"venv-{name}-{key.hexdigest()[:12]}"
    ready = venv / ".ready"
    reused = ready.exists() and not rebuild
    WORK.mkdir(parents=True, exist_ok=True)
    if not reused:
        for stale in WORK.glob(f"venv-{name}-*"):
            shutil.rmtree(stale)
        log(f"building the {name} install in {os.path.relpath(venv, ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(venv, "install", "--quiet", "setuptools>=68", "wheel")
        _pip(venv, "install", "--quiet", f"{src}{spec.extra}", *spec.also)
        ready.write_text(spec.command + "\n", encoding="utf-8")
    # Build the package from this run's copy of the working tree, deps untouched.
    _pip(
        venv,
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--force-reinstall",
        str(src),
    )
    install = Install(name, venv, _probe(venv), reused)
    _check(install)
    return install


def _probe(venv: Path) -> dict[str, Any]:
    probe = f"DISTS = {DISTS!r}\nMODULES = {OPTIONAL_MODULES!r}\n{PROBE}"
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=WORK,
        env=CHILD_ENV,
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


def _check(install: Install) -> None:
    info, spec = install.info, install.spec
    problems = []
    if not Path(info["package_dir"]).is_relative_to(install.venv):
        problems.append(f"cachewarm imported from {info['package_dir']}, not from the install")
    if info["source_sha256"] != tree_hash(ROOT / "cachewarm"):
        problems.append("installed cachewarm differs from the working tree's cachewarm/")
    present = {d for d, ok in info["importable"].items() if ok}
    if present != spec.optional:
        problems.append(f"imports {sorted(present) or 'none'} of the optional packages")
    actual = (info["driver_auto"], info["json"], info["redis_parser"])
    if actual != spec.picks:
        problems.append(f"cachewarm picks {actual}, expected {spec.picks}")
    if problems:
        raise RuntimeError(f"{install.name} install is not what it should be: {problems}")
