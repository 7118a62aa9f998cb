"""tox plugin: also find the interpreters pyenv installed, not only those on PATH."""

from __future__ import annotations

import glob
import os
from typing import Any

from tox.plugin import impl


@impl
def tox_add_core_config(core_conf: Any, state: Any) -> None:
    pattern = os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")
    found = [
        path for path in sorted(glob.glob(pattern)) if path not in state.conf.options.discover
    ]
    state.conf.options.discover = [*state.conf.options.discover, *found]
