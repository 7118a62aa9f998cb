"""The ``codexauth`` command as a racer: what a refresh imports is paid before the race.

    python tests/children/codexauth_cli.py [CODEXAUTH ARGS...]

Started by support.Racers.spawn(cli_args): imports codexauth and its dependencies, waits at
the barrier (children/barrier.py), then exits with ``codexauth.main(ARGS)``.
"""

from __future__ import annotations

import sys

import requests  # noqa: F401  # imported by the refresh: paid before the race

import codexauth
from children.barrier import wait_at_barrier

if __name__ == "__main__":
    wait_at_barrier()
    sys.exit(codexauth.main(sys.argv[1:]))
