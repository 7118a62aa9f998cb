"""A vendored copy: codexauth.py alone in a venv with exactly the packages README's
Vendoring section lists for that Python refreshes a login; with one of them missing it
says in one line what to install, before any request.

Each case makes a venv and installs from the package index, so they are slow; they need
the CPython of that version (pyenv's), skipped outside CI when it is missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support import REPO_ROOT, TokenServer, fp, py_env, read_doc, write_auth_json

README = (REPO_ROOT / "README.rst").read_text(encoding="utf-8")
TIMEOUT = 300.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def vendoring_packages(version: str) -> list[str]:
    """The packages README's Vendoring section tells users of Python `version` to install."""
    section = README.split("\n**Vendoring.**", 1)[1].split("\n\n\n", 1)[0]
    for line in section.splitlines():
        match = re.match(r"- Python ([\d., ]+): ``python -m pip install ([^`]+)``", line)
        if match and version in match.group(1).split(", "):
            return match.group(2).split()
    raise AssertionError(f"README's Vendoring section names no packages for Python {version}")


def find_python(version: str) -> str:
    # The account's own home: tests (and CI's scrubbed environment) point HOME elsewhere.
    home = pwd.getpwuid(os.getuid()).pw_dir
    found = sorted(glob.glob(f"{home}/.pyenv/versions/{version}.*/bin/python3"))
    if not found:
        # CI's machine has them, pyenv's, for root; another account has none of its own.
        if _in_ci() and os.getuid() == 0:
            pytest.fail(f"no CPython {version} (pyenv) in CI", pytrace=False)
        pytest.skip(f"no CPython {version} for this user (~/.pyenv/versions/{version}.*)")
    return found[0]


def make_venv(python: str, where: Path, packages: list[str]) -> Path:
    """A fresh venv at `where` with `packages` (from the index) and nothing else of ours."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=TIMEOUT)
    venv_python = where / "bin" / "python"
    install(venv_python, packages)
    return venv_python


def install(venv_python: Path, packages: list[str]) -> None:
    result = subprocess.run(
        [str(venv_python), "-m", "pip", "install", "--quiet", *packages],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if result.returncode != 0:
        reason = f"pip install {' '.join(packages)} failed: {result.stderr.strip()[-300:]}"
        if _in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)  # e.g. no network


@pytest.mark.slow
@pytest.mark.parametrize("version", ["3.9", "3.13"])
def test_the_module_alone_with_readmes_packages_refreshes_and_says_what_is_missing(
    version: str, codex_home: Path, token_server: TokenServer, tmp_path: Path
) -> None:
    python = find_python(version)
    packages = vendoring_packages(version)
    vendored = tmp_path / "project"
    vendored.mkdir()
    shutil.copyfile(REPO_ROOT / "codexauth.py", vendored / "codexauth.py")
    # config.toml naming the store: before 3.11 that is what needs tomli.
    (codex_home / "config.toml").write_text('cli_auth_credentials_store = "file"\n')
    write_auth_json(codex_home, access_exp=time.time() - 60)
    before = read_doc(codex_home / "auth.json")
    missing = "platformdirs"
    assert missing in packages
    venv_python = make_venv(python, tmp_path / "venv", [p for p in packages if p != missing])

    def token(*options: str) -> subprocess.CompletedProcess[str]:
        # -I: the venv's packages and the file beside the script, nothing from the tests.
        return subprocess.run(
            [str(venv_python), "-I", str(vendored / "codexauth.py"), *options, "token"],
            env=py_env(codex_home, token_server.url),
            cwd=vendored,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    lacking = token()
    assert lacking.returncode == 1
    assert lacking.stdout == ""
    assert lacking.stderr.count("\n") == 1, lacking.stderr[-500:]
    assert "Traceback" not in lacking.stderr
    assert f"python -m pip install {missing}\n" in lacking.stderr
    assert token_server.post_count == 0  # said before any request
    assert read_doc(codex_home / "auth.json") == before

    install(venv_python, [missing])
    done = token()
    assert (done.returncode, done.stderr) == (0, "")
    assert token_server.post_count == 1
    issued = token_server.last_issued
    assert issued is not None
    assert fp(done.stdout.strip()) == fp(issued["access_token"])

    # An extra's package is named as pip knows it: no package called codexauth is published.
    redis = token("--store", "redis://127.0.0.1:9/0")
    assert redis.returncode == 1
    assert redis.stderr.endswith("python -m pip install 'redis>=4.4'\n"), redis.stderr[-300:]
