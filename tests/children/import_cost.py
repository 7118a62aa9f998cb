"""Which of the given modules ``import codexauth`` pulls in; run it with ``python -S``.

    python -S tests/children/import_cost.py PATHS MODULE...

PATHS (joined by os.pathsep) go first on sys.path, so that every MODULE *could* be imported:
without ``site`` nothing (a .pth file, sitecustomize) imports one of them first. Prints three
lines: the MODULEs imported before ``import codexauth``, those imported after it, and whether
all of them can be imported here (``True``). This file itself imports only os and sys, so
it adds nothing to the first line.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    sys.path[:0] = argv[0].split(os.pathsep)
    forbidden = argv[1:]
    print(sorted(m for m in forbidden if m in sys.modules))
    import codexauth  # noqa: F401  # what it imports is the point

    print(sorted(m for m in forbidden if m in sys.modules))
    for name in forbidden:  # each can be imported here, so its absence above means something
        __import__(name)
    print(sorted(m for m in forbidden if m in sys.modules) == sorted(forbidden))


if __name__ == "__main__":
    main(sys.argv[1:])
