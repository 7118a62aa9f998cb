"""Refreshes an auth.json that is a bind mount, where rename cannot replace it.

    unshare -m sh -c 'mount --bind SOURCE AUTH_JSON && exec "$@"' sh \
        python tests/children/bind_mount.py

Inside its own mount namespace, with $CODEX_HOME/auth.json bind-mounted: first shows that a
rename onto auth.json is refused (prints ``rename-refused ERRNO_NAME``, or ``rename-worked``),
then forces a refresh and prints ``refreshed``.
"""

from __future__ import annotations

import errno
import os

import codexauth


def main() -> None:
    home = os.environ["CODEX_HOME"]
    probe = os.path.join(home, "probe.tmp")
    open(probe, "w").close()
    try:
        os.replace(probe, os.path.join(home, "auth.json"))
    except OSError as exc:
        assert exc.errno is not None, exc
        print("rename-refused", errno.errorcode[exc.errno])
        os.unlink(probe)
    else:
        print("rename-worked")
    codexauth.CodexAuth(home).refresh_token()
    print("refreshed")


if __name__ == "__main__":
    main()
