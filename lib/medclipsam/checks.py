"""Small validation helpers shared by the configuration dataclasses."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def integer_at_least(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or a ConfigError naming ``name`` if it is not an integer >= minimum."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
