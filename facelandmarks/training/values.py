"""Setting values read from text or a file and checked: a duration (``--time-limit``), a seed numpy takes."""

from __future__ import annotations

import re


def parse_duration(text) -> float:
    """Seconds in ``text``: ``600``, ``90s``, ``45m``, ``2h``, ``1h30m``, ``1.5h`` (ValueError otherwise)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text or len({u for _, u in parts}) < len(parts):
        raise ValueError(f"not a duration like 45m, 2h, 1h30m or 600 (seconds): {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def seed_problem(value) -> str | None:
    """What is wrong with ``value`` as a seed numpy takes (a whole number from 0 to 2**32 - 1), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        return f"must be a whole number from 0 to {2**32 - 1}, got {value!r}"
    return None
