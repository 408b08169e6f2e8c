"""What one integration's sync did, in counts (safe for XCom: no invoice or customer data)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IntegrationReport:
    integration_id: int
    tool: str
    booked: int = 0
    resolved_by_lookup: int = 0
    customers_created: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    deferred: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    still_rejected: int = 0
    would_push: int = 0
    api_calls: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "tool": self.tool,
            "booked": self.booked,
            "resolved_by_lookup": self.resolved_by_lookup,
            "customers_created": self.customers_created,
            "rejected": dict(self.rejected),
            "unknown": self.unknown,
            "deferred": self.deferred,
            "skipped": dict(self.skipped),
            "still_rejected": self.still_rejected,
            "would_push": self.would_push,
        }
