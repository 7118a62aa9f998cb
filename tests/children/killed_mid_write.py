"""Refreshes, and is killed (SIGKILL) as it renames the new auth.json into place.

    python tests/children/killed_mid_write.py [refresh]

The refresh answer is already durable in the outbox (codexauth-outbox.json); auth.json still
holds the spent refresh token. With `refresh`, a forced refresh (of a token that may still be
fresh) instead of get_token(). The process never exits normally.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import codexauth

real_replace = os.replace


def die_at_the_commit(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
    if os.path.basename(os.fspath(dst)) == codexauth.AUTH_FILE_NAME:
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)


if __name__ == "__main__":
    os.replace = die_at_the_commit
    auth = codexauth.CodexAuth(os.environ["CODEX_HOME"])
    if sys.argv[1:] == ["refresh"]:
        auth.refresh_token()
    else:
        auth.get_token()
