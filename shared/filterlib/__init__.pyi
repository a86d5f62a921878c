# Types of shared/filterlib/__init__.py for CPython's type checkers.
from typing import Any

from shared.filters import Chain

def from_compiled(compiled: list[Any]) -> Chain: ...
