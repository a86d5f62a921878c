# Types of shared/filterlib/__init__.py for CPython's type checkers.
from types import ModuleType
from typing import Any

from shared.filters import Chain

NAMES: tuple[str, ...]

def runtime(name: str) -> ModuleType: ...
def from_compiled(compiled: list[Any]) -> Chain: ...
