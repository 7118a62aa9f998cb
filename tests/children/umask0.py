"""Logs in, refreshes and records a failure with umask 0, noting the mode of every temp file.

    python tests/children/umask0.py

With umask 0 any file created without an explicit owner-only mode comes out world-readable.
An audit hook sees every temp file in $CODEX_HOME at the moment it is renamed into place: that
is the whole life of the temp file, with its final content. Saves an expired login ("rt-0",
which creates CODEX_HOME and auth.json), refreshes it, then saves one the server never issued
and refreshes again (a 401: the failure state sidecar). Prints JSON: ``{"renamed": [[new
name, mode], ...], "failed": the second refresh's reason}``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from datetime import datetime, timezone
from typing import Any

from support import access_token, id_token

import codexauth


def expired(refresh: str) -> codexauth.AuthDotJson:
    tokens = codexauth.TokenData(
        codexauth.parse_id_token(id_token()), access_token(time.time() - 60), refresh, "acct-1"
    )
    return codexauth.AuthDotJson(tokens=tokens, last_refresh=datetime.now(timezone.utc))


def main() -> None:
    os.umask(0)
    home = os.environ["CODEX_HOME"]
    renamed: list[list[Any]] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "os.rename" and str(args[0]).startswith(home):
            st = os.lstat(args[0])
            renamed.append([os.path.basename(str(args[1])), stat.S_IMODE(st.st_mode)])

    sys.addaudithook(hook)
    codexauth.save_auth(home, expired("rt-0"))  # creates CODEX_HOME and auth.json
    codexauth.CodexAuth(home).get_token()  # refresh: lock file, temp, rename
    codexauth.save_auth(home, expired("rt-not-issued"))
    failed = None
    try:
        codexauth.CodexAuth(home).get_token()  # 401: the failure state sidecar
    except codexauth.PermanentRefreshError as exc:
        failed = exc.reason.name
    print(json.dumps({"renamed": renamed, "failed": failed}))


if __name__ == "__main__":
    main()
