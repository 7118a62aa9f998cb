"""Refreshes on a full disk, then again once space is freed.

    unshare -m python tests/children/disk_full.py MOUNTPOINT SOURCE_AUTH_JSON same-size|grow

As root in its own mount namespace: mounts a 256 KiB tmpfs on MOUNTPOINT, copies
SOURCE_AUTH_JSON into MOUNTPOINT/codex/auth.json, fills every block, and runs ``codexauth
token`` on that home; then deletes the filler and runs it again. Prints JSON: ``{"first":
[exit code, stdout, stderr], "second": [...], "refresh_token": what auth.json holds at the
end}``. The last argument only tells the test's two cases apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence


def codexauth_token(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codexauth", "token"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def main(argv: Sequence[str]) -> None:
    mnt, src = argv[0], argv[1]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=700", "tmpfs", mnt], check=True)
    home = os.path.join(mnt, "codex")
    os.mkdir(home, 0o700)
    with open(src, "rb") as f, open(os.path.join(home, "auth.json"), "wb") as out:
        out.write(f.read())
    os.chmod(os.path.join(home, "auth.json"), 0o600)
    with open(os.path.join(mnt, "filler"), "wb", buffering=0) as filler:  # fill every block
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    env = dict(os.environ, CODEX_HOME=home)
    first = codexauth_token(env)
    os.unlink(os.path.join(mnt, "filler"))  # the user frees some space
    second = codexauth_token(env)
    with open(os.path.join(home, "auth.json"), "rb") as f:
        final = json.load(f)
    report = {
        "first": [first.returncode, first.stdout, first.stderr],
        "second": [second.returncode, second.stdout, second.stderr],
        "refresh_token": final["tokens"]["refresh_token"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
