"""README.rst is a contract: its commands, examples and documented keys are checked here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import REPO_ROOT, py_env, write_auth_json

import codexauth

README = (REPO_ROOT / "README.rst").read_text(encoding="utf-8")


def _literal_commands(section: str) -> list[str]:
    """The indented literal lines of one README section."""
    body = README.split(f"\n{section}\n", 1)[1].split("\n-----", 1)[0]
    return [line.strip() for line in body.splitlines() if line.startswith("    ")]


def _python_blocks() -> list[str]:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", README)
    return [re.sub(r"^    ", "", block, flags=re.M) for block in blocks]


def _block_id(block: str) -> str:
    """What a Python example shows: the HTTP client it uses, else the first codexauth name."""
    for client in ("httpx", "requests"):
        if f"import {client}\n" in block:
            return f"{client}-adapter"
    found = re.search(r"codexauth\.(\w+)", block)
    return found.group(1) if found else "no-codexauth-name"


PYTHON_BLOCKS = _python_blocks()


def test_quick_start_is_two_commands_and_ci_runs_the_test_one_verbatim() -> None:
    commands = _literal_commands("Quick start")
    assert commands == [
        "python -m pip install . && codexauth demo",
        "python -m pip install -e '.[test]' && python -m pytest -q",
    ]
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # Verbatim, and in the scrubbed environment (env -i) that .ci/run defines.
    assert any(line.startswith("scrubbed ") and f'"{commands[1]}"' in line for line in ci_lines), (
        "the README's test command is not in .ci/run"
    )
    assert any("env -i " in line for line in ci_lines)


class _Api(BaseHTTPRequestHandler):
    """Any API: answers 200 to a request that carries a bearer token."""

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization", "").startswith("Bearer ")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1/me"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[_block_id(b) for b in PYTHON_BLOCKS])
def test_python_examples_run(block: str, tmp_path: Path, api_url: str) -> None:
    home = tmp_path / ".codex"
    home.mkdir(mode=0o700)
    write_auth_json(home)
    program = f"url = {api_url!r}\n{block}\n"
    if "response" in block:
        program += "assert response.status_code == 200, response.status_code\n"
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=py_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_status_json_keys_are_the_documented_ones(tmp_path: Path) -> None:
    documented = README.split("``status --json`` prints these keys:", 1)[1].split("\n\n", 1)[0]
    keys = set(re.findall(r"``([a-z_]+)``", documented))
    keys -= {"chatgpt", "apikey", "file"}  # values of `mode` and `store`, not keys
    write_auth_json(tmp_path)
    info = codexauth._status(codexauth.CodexAuth(tmp_path))
    assert set(info) == keys
    assert json.loads(json.dumps(info)) == info


def test_exit_code_table_matches_the_cli() -> None:
    table = README.split("Exit codes:", 1)[1].split("Messages go to standard error", 1)[0]
    rows = re.findall(r"^([0-9])\s{5}", table, flags=re.M)
    assert rows == ["0", "1", "2", "3", "4", "5"]
    assert codexauth._exit_code(codexauth.NotLoggedInError("x")) == 3
    permanent = codexauth.PermanentRefreshError(codexauth.RefreshTokenFailedReason.EXHAUSTED)
    assert codexauth._exit_code(permanent) == 4
    assert codexauth._exit_code(codexauth.LockTimeoutError("x")) == 5
    assert codexauth._exit_code(codexauth.AuthFileError("p", "bad")) == 1


def test_the_sdist_ships_every_file_the_tests_read(tmp_path: Path) -> None:
    # From an unpacked sdist, `pytest` must pass as from a clone: test_readme.py reads .ci/run.
    pytest.importorskip("build")
    pytest.importorskip("setuptools")  # --no-isolation builds with the installed one
    source = tmp_path / "source"  # a copy, so that building leaves no egg-info in the tree
    junk = (".git", ".ci-venv", ".codex-cli", ".tox", "*.egg-info", "build", "dist", "__pycache__")
    junk += (".*_cache",)
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(*junk))
    build = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check"]
    result = subprocess.run(
        [*build, "--outdir", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    read_by_tests = [".ci/run", "README.rst", "tox.ini", "pyproject.toml", "setup.cfg"]
    read_by_tests += [f"{p.parent.name}/{p.name}" for p in REPO_ROOT.glob("tests/*.py")]
    read_by_tests += [f"benchmarks/{p.name}" for p in REPO_ROOT.glob("benchmarks/*.py")]
    assert sorted(set(read_by_tests) - shipped) == []


def test_the_auth_json_example_is_a_chatgpt_login(tmp_path: Path) -> None:
    body = README.split("\nThe auth.json format\n", 1)[1].split("\n-----", 1)[0]
    example = body.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    (tmp_path / "auth.json").write_text(example, encoding="utf-8")
    login = codexauth.load_auth_dot_json(tmp_path)
    assert login is not None and login.mode is codexauth.AuthMode.CHATGPT
    assert login.tokens is not None
    assert login.tokens.id_token.email == "you@example.com"
    assert login.tokens.account_id == "ACCOUNT-ID"


def test_every_hand_mutant_still_finds_the_code_it_mutates() -> None:
    """benchmarks/mutants.py names each mutant's code by its exact text: a refactor that
    moves that text would leave the mutant measuring nothing, silently."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import mutants
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    source = (REPO_ROOT / "codexauth.py").read_text(encoding="utf-8")
    stale = [m.id for m in mutants.MUTANTS if source.count(m.old) != 1]
    assert stale == [], "mutants whose snippet is not found exactly once in codexauth.py"
    assert len({m.id for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
