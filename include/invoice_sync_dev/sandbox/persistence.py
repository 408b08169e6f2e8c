"""One JSON file holding the state of every simulator, saved atomically after each mutation.

``make run`` twice must find the books of the first run and, above all, the refresh tokens it rotated:
the connector stored the newest one and the old one is dead. Each tool saves its own section; the file is
written to a temporary sibling and moved into place with ``os.replace`` so a crash never leaves half a file.
Decimals and datetimes are tagged so they come back with their types.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any


def encode(value: Any) -> Any:
    """JSON-ready form of ``value``: Decimal and datetime become tagged objects."""
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, dict):
        if set(value) == {"$dec"}:
            return Decimal(value["$dec"])
        if set(value) == {"$dt"}:
            return datetime.fromisoformat(value["$dt"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


class StateFile:
    """The sandbox state file; sections are keyed by tool name (``"exact"``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._sections: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        sections: dict[str, Any] = decode(json.loads(self.path.read_text(encoding="utf-8")))
        return sections

    def section(self, tool: str) -> Any | None:
        """The saved state of one tool, or None when there is none yet."""
        with self._lock:
            return self._sections.get(tool)

    def save(self, tool: str, state: Any) -> None:
        """Replace one tool's section and rewrite the file atomically."""
        with self._lock:
            self._sections[tool] = state
            text = json.dumps(encode(self._sections), indent=1, sort_keys=True)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
