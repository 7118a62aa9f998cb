"""Refreshes twice in one process while no file can grow past auth.json's size.

    python tests/children/refresh_unsaved_twice.py

RLIMIT_FSIZE is set to auth.json's size: neither auth.json nor an outbox can be written
(EFBIG), so the first refresh's pair lives only in this CodexAuth object. The second,
forced, refresh must spend that pair's refresh token, not the stored one. Prints JSON:
``{"first": fp, "second": fp}`` (digests of the access tokens), or the error's class name.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource

import codexauth


def fp(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


if __name__ == "__main__":
    home = os.environ["CODEX_HOME"]
    size = os.path.getsize(os.path.join(home, "auth.json"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    auth = codexauth.CodexAuth(home)
    report: dict[str, str] = {}
    try:
        report["first"] = fp(auth.get_token())
        report["second"] = fp(auth.refresh_token())
    except codexauth.CodexAuthError as exc:
        report["error"] = type(exc).__name__
    print(json.dumps(report))
