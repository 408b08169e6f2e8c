"""Builders that put hand-made invoicing data into a real database (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from invoice_sync.store.models import CustomerRow, IntegrationRow, InvoiceLineRow, InvoiceRow

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Data:
    """Inserts integrations, one customer and invoices with one 21 % line each."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.next_id = 1

    def integration(self, integration_id: int = 1, *, sync_from: date | None = None) -> int:
        with Session(self.engine) as session, session.begin():
            if session.get(CustomerRow, 1) is None:
                session.add(CustomerRow(id=1, kind="company", name="Atelier Verhoeven BV", updated_at=T0))
            session.add(
                IntegrationRow(
                    id=integration_id,
                    name=f"Integration {integration_id}",
                    tool="exact_online",
                    conn_id="exact_demo",
                    auto_sync=True,
                    sync_from=sync_from,
                    settings={"division": 123456},
                    updated_at=T0,
                )
            )
        return integration_id

    def invoices(self, count: int, integration_id: int = 1, **fields: Any) -> list[int]:
        """``count`` invoices; ``fields`` override columns (``number`` may contain ``{id}``)."""
        rows, lines = [], []
        for _ in range(count):
            invoice_id = self.next_id
            self.next_id += 1
            row: dict[str, Any] = {
                "id": invoice_id,
                "integration_id": integration_id,
                "kind": "invoice",
                "number": f"2026/{invoice_id:05d}",
                "status": "registered",
                "customer_id": 1,
                "invoice_date": date(2026, 3, 1),
                "due_date": date(2026, 3, 31),
                "currency": "EUR",
                "total_excl_vat": Decimal("100.00"),
                "total_vat": Decimal("21.00"),
                "total_incl_vat": Decimal("121.00"),
                "registered_at": T0,
                "updated_at": T0,
                "registration_number": None,
                "synced_at": None,
            }
            for key, value in fields.items():
                row[key] = value.format(id=invoice_id) if isinstance(value, str) else value
            rows.append(row)
            lines.append(
                {
                    "invoice_id": invoice_id,
                    "position": 1,
                    "description": "Consultancy",
                    "quantity": Decimal("1"),
                    "unit_price": Decimal("100"),
                    "vat_rate": Decimal("21"),
                    "amount": Decimal("100.00"),
                    "gl_account": "7000",
                }
            )
        with Session(self.engine) as session, session.begin():
            for start in range(0, len(rows), 5000):
                session.execute(insert(InvoiceRow), rows[start : start + 5000])
                session.execute(insert(InvoiceLineRow), lines[start : start + 5000])
        return [row["id"] for row in rows]

    def synced(self, count: int, integration_id: int = 1, **fields: Any) -> list[int]:
        return self.invoices(
            count,
            integration_id,
            registration_number="2570{id}",
            synced_at=T0 + timedelta(days=1),
            **fields,
        )


@pytest.fixture
def data(store: Any) -> Data:
    return Data(store.engine)
