"""Package namespaces that import their members on first use (PEP 562).

The engine's packages re-export their public names. Importing them all at once would make every
reader of a feature spec or a manifest (a gRPC server, the CLI's help) pay for torch and the model
zoo it never builds; a lazy namespace loads a member's module only when the member is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_members(package: str, homes: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name → the module (relative to `package`) that defines it.

    A member, once loaded, is stored in `namespace` (the package's globals), so later lookups are plain.
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        namespace[name] = value
        return value

    return __getattr__
