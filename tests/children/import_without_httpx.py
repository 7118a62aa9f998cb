"""``import codexauth`` where httpx is not installed: RequestsAuth works, HttpxAuth says why.

    python tests/children/import_without_httpx.py

Marks httpx absent, imports codexauth, touches and builds RequestsAuth, then builds an
HttpxAuth. Prints ``ImportError: MESSAGE``, or ``no error``.
"""

from __future__ import annotations

import sys


def main() -> None:
    # What an environment without httpx looks like to `import httpx`.
    sys.modules["httpx"] = None  # type: ignore[assignment]  # None is how sys.modules says so
    import codexauth  # only now, with httpx already absent

    codexauth.RequestsAuth  # noqa: B018  # the name resolves without httpx
    codexauth.RequestsAuth()
    try:
        codexauth.HttpxAuth()
    except ImportError as exc:
        print("ImportError:", exc)
    else:
        print("no error")


if __name__ == "__main__":
    main()
