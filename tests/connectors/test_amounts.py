"""The mapping rules every connector shares: which account a discount books on, and what is unmapped."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from invoice_sync.connectors.amounts import gl_account_for, unmapped_problems
from invoice_sync.domain.discounts import bookable_lines


def test_discounts_go_to_the_discount_account_when_one_is_mapped(builders: Any) -> None:
    """The app's negative lines and the lines derived from an invoice-level discount alike."""
    invoice = builders.invoice(
        [builders.line("200.00"), builders.line("-20.00", position=2, description="Loyalty")], discount="10"
    )
    plain = builders.settings()
    with_account = builders.settings(discount_gl_account="gl-discount-guid")
    lines = bookable_lines(invoice)
    assert [line.amount for line in lines] == [200, -20, -18]
    assert [gl_account_for(line, plain) for line in lines] == ["gl-7000-guid"] * 3
    assert [gl_account_for(line, with_account) for line in lines] == [
        "gl-7000-guid",
        "gl-discount-guid",
        "gl-discount-guid",
    ]


def test_a_discount_on_the_discount_account_needs_no_mapping_of_its_own_account(builders: Any) -> None:
    invoice = builders.invoice(
        [builders.line("200.00"), builders.line("-20.00", position=2, gl_account="4999")]
    )
    where = dict(vat_code="an Exact VAT code", gl_account="an Exact G/L account", where="division 1")
    (problem,) = unmapped_problems(invoice, builders.settings(), **where)
    assert problem.message == (
        "GL account 4999 is not mapped to an Exact G/L account for division 1, and no default is set"
    )
    with_account = replace(builders.settings(), discount_gl_account="gl-discount-guid")
    assert unmapped_problems(invoice, with_account, **where) == []
