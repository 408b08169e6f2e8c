"""The Xero connector against the Xero simulator over real HTTP on loopback.

The Airflow connection comes from an ``AIRFLOW_CONN_*`` variable, tokens live in an in-memory vault with a
real lock, and faults are injected through the simulator's control API, so every test runs the code path a
task runs in production. Assertions look at the simulator's books, the outcomes and the calls made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import requests
from flows import book, connector_factory

from invoice_sync.connectors.xero.connector import BATCH_SIZE, XeroConnector, build_connector
from invoice_sync.connectors.xero.hook import XeroHook
from invoice_sync.domain.errors import AuthError, ConfigError, QuotaExceededError
from invoice_sync.domain.models import Booked, Booking, ErrorClass, InvoiceKind, Rejected, Unknown
from invoice_sync.domain.ports import CustomerLinkFailure
from invoice_sync_dev.sandbox.server import start_in_thread
from invoice_sync_dev.sandbox.xero import demo_connection as xero_connection
from invoice_sync_dev.sandbox.xero_fixtures import (
    ARCHIVED_REVENUE_ACCOUNT,
    CLIENT_ID,
    DEMO_TENANT_ID,
    DEMO_TENANT_NAME,
    DISCOUNT_ACCOUNT,
    OTHER_REVENUE_ACCOUNT,
    SALES_ACCOUNT,
    SECOND_TENANT_ID,
    SECOND_TENANT_NAME,
    TAX_DELETED,
    TAX_EC_ZERO,
    TAX_EXEMPT,
    TAX_REDUCED,
    TAX_STANDARD,
    TAX_ZERO,
)

CONN_ID = "xero_test"
CLIENT_TIMEOUT_S = 2.0
PUT_INVOICES = "PUT Invoices"
PUT_CREDIT_NOTES = "PUT CreditNotes"
GET_INVOICES = "GET Invoices"
GET_CREDIT_NOTES = "GET CreditNotes"
GET_CONTACTS = "GET Contacts"
PUT_CONTACTS = "PUT Contacts"
WHERE = f"Xero organisation {DEMO_TENANT_ID}"


def set_connection(monkeypatch: pytest.MonkeyPatch, sandbox_url: str, **extra: Any) -> None:
    conn = xero_connection(sandbox_url)
    conn["extra"] = {**conn["extra"], "timeout": CLIENT_TIMEOUT_S, **extra}  # type: ignore[dict-item]  # the demo connection's extra is a mapping of strings
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))


def control(handle: Any, path: str, body: Any = None) -> Any:
    url = f"{handle.url_of('xero')}/_sandbox/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


def sim(handle: Any) -> Any:
    return handle.simulator("xero")


@pytest.fixture
def xero(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    set_connection(monkeypatch, sandbox.url)
    return sandbox


@pytest.fixture
def fast_xero(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A simulator whose clock runs 60x: Xero's minute passes in one real second."""
    handle = start_in_thread(time_scale=60)
    set_connection(monkeypatch, handle.url, minute_s=1, day_s=1440)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def settings(builders: Any) -> Any:
    return builders.settings(
        journal=None,
        credit_note_journal=None,
        vat_codes={"21": TAX_STANDARD, "9": TAX_REDUCED, "0": TAX_ZERO},
        gl_accounts={"7000": SALES_ACCOUNT, "7010": OTHER_REVENUE_ACCOUNT},
        default_gl_account=None,
        payment_condition=None,
        division=None,
        tenant_id=DEMO_TENANT_ID,
    )


@pytest.fixture
def connect(builders: Any, vault: Any, settings: Any) -> Callable[..., XeroConnector]:
    """Build a connector; keyword arguments go to the hook (short back-off)."""
    return connector_factory("xero", CONN_ID, builders, vault, settings)


def customer(builders: Any, customer_id: int, name: str | None = None) -> Any:
    return builders.customer(customer_id, name=name or f"Klant {customer_id}")


def calls(handle: Any) -> dict[str, int]:
    return dict(sim(handle).stats_snapshot()["calls"])


# -- booking ----------------------------------------------------------------------------------------------


def test_a_batch_books_the_good_invoices_and_refuses_the_bad_with_xeros_text(
    xero, connect, builders, settings
):
    mapped = replace(
        settings,
        vat_codes={**settings.vat_codes, "6": TAX_DELETED},
        gl_accounts={**settings.gl_accounts, "7999": ARCHIVED_REVENUE_ACCOUNT},
    )
    alice = customer(builders, 1)
    invoices = [
        builders.invoice(invoice_id=1, number="P-1", customer=alice),
        builders.invoice([builders.line("10.00", "6")], invoice_id=2, number="P-2", customer=alice),
        builders.invoice(
            [builders.line("10.00", gl_account="7999")], invoice_id=3, number="P-3", customer=alice
        ),
        builders.invoice([builders.line("99.99", "9")], invoice_id=4, number="P-4", customer=alice),
    ]
    outcomes = book(connect(integration_settings=mapped), *invoices)

    booked = {b["reference"]: b for b in sim(xero).booked()}
    assert outcomes == [
        Booked(1, "P-1", booked["P-1"]["external_id"]),
        Rejected(
            2,
            ErrorClass.CONFIG,
            f"{WHERE}: The TaxType code OUTPUT3 does not exist or cannot be used for this type of "
            "transaction.",
        ),
        Rejected(
            3,
            ErrorClass.CONFIG,
            f"{WHERE}: Account code '210' has been archived, or has been deleted. "
            "Each line item must reference a valid account.",
        ),
        Booked(4, "P-4", booked["P-4"]["external_id"]),
    ]
    assert list(booked) == ["P-1", "P-4"]
    assert booked["P-1"]["customer_code"] == "1"
    assert sim(xero).create_posts() == {"P-1": 1, "P-2": 1, "P-3": 1, "P-4": 1}
    assert calls(xero)[PUT_INVOICES] == 1  # one call for the batch


def test_booked_totals_equal_the_apps_to_the_cent(xero, connect, builders):
    """Multi-rate invoices whose VAT the app rounded per rate, not per line: booked as the app says."""
    lines = [builders.line("1.05", "21", position=n) for n in range(9)] + [
        builders.line("2.05", "21", position=9)
    ]
    lines += [builders.line("0.15", "9", position=10 + n, gl_account="7010") for n in range(3)]
    awkward = builders.invoice(
        lines, invoice_id=1, number="R-1", total_vat="2.46", customer=customer(builders, 2)
    )
    mixed = builders.invoice(
        [
            builders.line("33.33", "21", quantity="3"),
            builders.line("66.67", "9", position=2),
            builders.line("10.00", "0", position=3),
        ],
        invoice_id=2,
        number="R-2",
        customer=customer(builders, 3),
    )
    credit = builders.invoice(
        [builders.line("0.35", "21"), builders.line("0.35", "21", position=2)],
        invoice_id=3,
        number="R-3",
        kind=InvoiceKind.CREDIT_NOTE,
        total_vat="0.15",
        customer=customer(builders, 3),
    )
    outcomes = book(connect(), awkward, mixed, credit)
    assert [type(o) for o in outcomes] == [Booked, Booked, Booked]

    books = {b["reference"]: b for b in sim(xero).booked()}
    for invoice, sign in ((awkward, 1), (mixed, 1), (credit, -1)):  # the debtor's side: a credit is negative
        booking = books[invoice.number]
        assert booking["total_excl_vat"] == sign * invoice.total_excl_vat
        assert booking["total_vat"] == sign * invoice.total_vat
        assert booking["total_incl_vat"] == sign * invoice.total_incl_vat
    assert books["R-3"]["kind"] == "credit_note" and books["R-3"]["total_incl_vat"] == Decimal("-0.85")
    assert [line["TaxAmount"] for line in books["R-3"]["lines"]] == [Decimal("0.08"), Decimal("0.07")]


def test_discounts_and_zero_rate_regimes_are_booked_to_the_cent(xero, connect, builders, settings):
    """A negative line, a 10 % invoice-level discount on an invoice and on a credit note (on the discount
    account), and two 0 % lines of different regimes: each booked as the app says, with its own tax type."""
    regimes = replace(
        settings,
        tax_rates={"exempt": TAX_EXEMPT, "intra_community": TAX_EC_ZERO},
        discount_gl_account=DISCOUNT_ACCOUNT,
    )
    negative = builders.invoice(
        [builders.line("100.00"), builders.line("-10.00", position=2)],
        invoice_id=1, number="D-1", customer=customer(builders, 1),
    )  # fmt: skip

    def discounted(invoice_id: int, number: str, kind: InvoiceKind) -> Any:  # 270.00 + 45.90
        return builders.invoice(
            [builders.line("200.00", "21"), builders.line("100.00", "9", position=2, gl_account="7010")],
            invoice_id=invoice_id, number=number, kind=kind, customer=customer(builders, 1), discount="10",
        )  # fmt: skip

    zero = builders.invoice(
        [
            replace(builders.line("100.00", "0"), tax_rate="exempt"),
            replace(builders.line("50.00", "0", position=2), tax_rate="intra_community"),
        ],
        invoice_id=4, number="D-4", customer=customer(builders, 1),
    )  # fmt: skip
    invoices = [
        negative,
        discounted(2, "D-2", InvoiceKind.INVOICE),
        discounted(3, "D-3", InvoiceKind.CREDIT_NOTE),
        zero,
    ]
    outcomes = book(connect(integration_settings=regimes), *invoices)
    assert [type(o) for o in outcomes] == [Booked] * 4
    books = {b["reference"]: b for b in sim(xero).booked()}
    for invoice in invoices:
        sign = -1 if invoice.kind is InvoiceKind.CREDIT_NOTE else 1  # the debtor's side
        booking = books[invoice.number]
        assert (booking["total_excl_vat"], booking["total_vat"], booking["total_incl_vat"]) == (
            sign * invoice.total_excl_vat, sign * invoice.total_vat, sign * invoice.total_incl_vat,
        )  # fmt: skip
    for number in ("D-2", "D-3"):
        assert [(x["LineAmount"], x["AccountCode"], x["TaxType"]) for x in books[number]["lines"]] == [
            (Decimal("200.00"), SALES_ACCOUNT, TAX_STANDARD),
            (Decimal("100.00"), OTHER_REVENUE_ACCOUNT, TAX_REDUCED),
            (Decimal("-20.00"), DISCOUNT_ACCOUNT, TAX_STANDARD),
            (Decimal("-10.00"), DISCOUNT_ACCOUNT, TAX_REDUCED),
        ]
    assert [x["TaxType"] for x in books["D-4"]["lines"]] == [TAX_EXEMPT, TAX_EC_ZERO]


def test_invoices_and_credit_notes_go_in_separate_calls_and_each_calls_outcomes_come_first(
    xero, connect, builders
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    invoices = [
        builders.invoice(
            invoice_id=n,
            number=f"B-{n}",
            customer=alice,
            kind=InvoiceKind.CREDIT_NOTE if n % 10 == 0 else InvoiceKind.INVOICE,
        )
        for n in range(1, 61)
    ]
    outcomes = connector.push(invoices, links)
    first = [next(outcomes) for _ in range(BATCH_SIZE)]
    assert len(sim(xero).booked()) == BATCH_SIZE  # the next call has not left yet
    rest = list(outcomes)
    assert all(isinstance(o, Booked) for o in first + rest)
    credit_ids = [n for n in range(1, 61) if n % 10 == 0]
    assert [o.invoice_id for o in first + rest] == [n for n in range(1, 61) if n % 10] + credit_ids
    books = sim(xero).booked()
    assert [b["reference"] for b in books if b["kind"] == "credit_note"] == [f"B-{n}" for n in credit_ids]
    assert {o.registration_number for o in first + rest} == {f"B-{n}" for n in range(1, 61)}
    assert calls(xero)[PUT_INVOICES] == 2 and calls(xero)[PUT_CREDIT_NOTES] == 1


def test_invalid_invoices_are_rejected_without_a_call(xero, connect, builders):
    outcomes = list(connect().push([builders.invoice([builders.line("10.00", "6")])], {1042: "c"}))
    assert outcomes == [
        Rejected(1, ErrorClass.CONFIG, f"VAT rate 6% is not mapped to a Xero tax rate (TaxType) for {WHERE}")
    ]
    assert PUT_INVOICES not in calls(xero)


# -- exactly once -------------------------------------------------------------------------------------------


def test_an_identical_resend_is_replayed_by_its_idempotency_key(xero, connect, builders):
    alice = customer(builders, 1)
    invoices = [builders.invoice(invoice_id=n, number=f"I-{n}", customer=alice) for n in (1, 2)]
    first = book(connect(), *invoices)
    again = book(connect(), *invoices)  # another task sends the very same request
    assert again == first
    assert [b["reference"] for b in sim(xero).booked()] == ["I-1", "I-2"]
    assert sim(xero).create_posts() == {"I-1": 1, "I-2": 1}
    assert sim(xero).stats_snapshot()["idempotent_replays"] == 1


@pytest.mark.parametrize("kind", ["commit_then_drop", "malformed"])
def test_a_lost_answer_is_unknown_for_the_call_and_settled_by_lookup(xero, connect, builders, kind):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(xero, "faults", [{"method": "PUT", "path": "/Invoices$", "kind": kind, "times": 1}])
    invoices = [builders.invoice(invoice_id=n, number=f"L-{n}", customer=alice) for n in (1, 2)]
    outcomes = list(connector.push(invoices, links))
    assert [type(o) for o in outcomes] == [Unknown, Unknown]
    assert "look it up before resending" in outcomes[0].message

    found = connector.find_booked(["L-1", "L-2", "L-3"])
    held = {b["reference"]: b["external_id"] for b in sim(xero).booked()}
    assert found == {ref: Booking(ref, ref, held[ref]) for ref in ("L-1", "L-2")}
    assert sim(xero).create_posts() == {"L-1": 1, "L-2": 1}
    assert calls(xero)[GET_INVOICES] == 1 and calls(xero)[GET_CREDIT_NOTES] == 1  # batched

    # Resending the same request (the engine would not, but a retry might) is replayed, not re-booked.
    assert [type(o) for o in connector.push(invoices, links)] == [Booked, Booked]
    assert sim(xero).create_posts() == {"L-1": 1, "L-2": 1}


def test_a_number_xero_already_holds_is_settled_by_lookup(xero, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    (first,) = connector.push([builders.invoice(invoice_id=1, number="D-1", customer=alice)], links)
    # An interrupted run sends D-1 again in another batch: another request, so Xero processes it.
    again = list(
        connector.push(
            [
                builders.invoice(invoice_id=1, number="D-1", customer=alice),
                builders.invoice(invoice_id=2, number="D-2", customer=alice),
            ],
            links,
        )
    )
    assert again[0] == first
    assert isinstance(again[1], Booked)
    assert [b["reference"] for b in sim(xero).booked()] == ["D-1", "D-2"]
    assert sim(xero).create_posts() == {"D-1": 2, "D-2": 1}

    # A draft keyed by hand in Xero under our number is not booked: refused, with what to do.
    line = {"Description": "x", "Quantity": 1, "UnitAmount": 5, "AccountCode": SALES_ACCOUNT}
    draft = {"Type": "ACCREC", "Contact": {"ContactID": links[1]}, "InvoiceNumber": "D-3", "Status": "DRAFT",
             "LineItems": [line]}  # fmt: skip
    connector.hook.create("Invoices", "Invoices", [draft])
    (refused,) = connector.push([builders.invoice(invoice_id=3, number="D-3", customer=alice)], links)
    assert refused == Rejected(
        3,
        ErrorClass.DATA,
        f"{WHERE}: Invoice # must be unique. (Xero holds invoice D-3 as DRAFT, not made by this "
        "integration: approve or delete it in Xero)",
    )
    assert connector.find_booked(["D-3"]) == {}


def test_the_lookup_counts_booked_statuses_and_finds_credit_notes(xero, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    invoices = [builders.invoice(invoice_id=n, number=f"S-{n}", customer=alice) for n in (1, 2, 3)]
    invoices.append(
        builders.invoice(invoice_id=4, number="S-4", customer=alice, kind=InvoiceKind.CREDIT_NOTE)
    )
    outcomes = list(connector.push(invoices, links))
    assert all(isinstance(o, Booked) for o in outcomes)
    # Xero's users void and pay invoices; the sandbox does not simulate those updates, so set them.
    stored = sim(xero)._tenant_books(DEMO_TENANT_ID)["invoices"]
    by_number = {doc["InvoiceNumber"]: doc for doc in stored.values()}
    by_number["S-1"]["Status"] = "VOIDED"  # booked by us once: never booked again
    by_number["S-2"]["Status"] = "DELETED"  # gone
    by_number["S-3"]["Status"] = "PAID"
    found = connector.find_booked(["S-1", "S-2", "S-3", "S-4", "S-5"])
    assert sorted(found) == ["S-1", "S-3", "S-4"]
    assert found["S-4"] == Booking("S-4", "S-4", outcomes[3].external_id)


def validation_exception(message: str, number: str | None = None) -> dict[str, Any]:
    """Xero's 400 body refusing a whole request for one element (``number``, or none named)."""
    element: dict[str, Any] = {"HasErrors": True, "ValidationErrors": [{"Message": message}]}
    if number is not None:
        element["InvoiceNumber"] = number
    return {"ErrorNumber": 10, "Type": "ValidationException", "Message": message, "Elements": [element]}


def refused_once(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A fault rule: the next PUT to ``path`` is answered 400 with ``body``, nothing processed."""
    return {"method": "PUT", "path": path, "kind": "status", "status": 400, "body": body, "times": 1}


def test_a_whole_request_refusal_is_mapped_back_by_number_and_the_rest_sent_again(xero, connect, builders):
    """Without ``summarizeErrors=false`` taking effect, Xero refuses the whole call and creates nothing."""
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    refusal = validation_exception("Account code '999' is not a valid code for this document.", "W-2")
    control(xero, "faults", [refused_once("/Invoices$", refusal)])
    invoices = [builders.invoice(invoice_id=n, number=f"W-{n}", customer=alice) for n in (1, 2, 3)]
    outcomes = list(connector.push(invoices, links))
    assert [type(o) for o in outcomes] == [Rejected, Booked, Booked]
    assert outcomes[0] == Rejected(
        2, ErrorClass.CONFIG, f"{WHERE}: Account code '999' is not a valid code for this document."
    )
    assert [b["reference"] for b in sim(xero).booked()] == ["W-1", "W-3"]
    assert calls(xero)[PUT_INVOICES] == 1  # the refused call never reached the books; W-1 and W-3 resent

    mismatch = validation_exception("Idempotency Key: k is used with a different request.")
    control(xero, "faults", [refused_once("/Invoices$", mismatch)])
    (outcome,) = connector.push([builders.invoice(invoice_id=4, number="W-4", customer=alice)], links)
    assert outcome == Rejected(
        4, ErrorClass.TRANSIENT, f"{WHERE}: Idempotency Key: k is used with a different request."
    )


def test_numbers_with_commas_quotes_and_accents_are_found_again(xero, connect, builders):
    alice = customer(builders, 1)
    numbers = ["A,1", 'B "2"', "Ç-3\\x"]
    invoices = [builders.invoice(invoice_id=1, number=numbers[0], customer=alice)]
    invoices += [
        builders.invoice(invoice_id=n, number=number, customer=alice, kind=InvoiceKind.CREDIT_NOTE)
        for n, number in enumerate(numbers[1:], start=2)
    ]
    outcomes = book(connect(), *invoices)
    assert [o.registration_number for o in outcomes] == numbers
    assert sorted(connect().find_booked([*numbers, "a,1", "A"])) == sorted(numbers)


# -- customers ---------------------------------------------------------------------------------------------


def test_contacts_are_matched_by_number_across_runs_not_duplicated(xero, connect, builders):
    people = [customer(builders, n) for n in (1, 2, 3)]
    first = connect().ensure_customers(people + [people[0]])
    second = connect().ensure_customers(people)  # the next run
    assert first == second and len(set(first.values())) == 3
    assert sorted(c["code"] for c in sim(xero).customers()) == ["1", "2", "3"]
    assert calls(xero) == {GET_CONTACTS: 2, PUT_CONTACTS: 1}  # one lookup per run, one batch create


def test_a_name_clash_links_the_contact_keyed_by_hand_and_refuses_another_customers(xero, connect, builders):
    connector = connect()
    hand = {"Name": "Bakkerij Peeters"}  # keyed in Xero before the integration existed: no number
    (made,) = connector.hook.create("Contacts", "Contacts", [hand])
    taken = connector.ensure_customers([customer(builders, 9, "Jan Peeters")])
    links = connector.ensure_customers(
        [
            customer(builders, 5, "bakkerij peeters"),
            customer(builders, 6, "Jan Peeters"),
            customer(builders, 7),
        ]
    )
    assert links[5] == made["ContactID"]  # adopted, not a second contact for the customer
    assert links[6] == CustomerLinkFailure(
        "data",
        f"{WHERE}: The contact name Jan Peeters is already assigned to another contact. The contact name "
        "must be unique across all active contacts. (the Xero contact Jan Peeters has contact code 9, "
        "another customer's; make the names of customers #6 and #9 differ in the app)",
    )
    assert isinstance(links[7], str) and links[7] != taken[9]
    codes = {c["id"]: c["code"] for c in sim(xero).customers()}
    assert codes[made["ContactID"]] == "5"  # given our number: the next run finds it by number
    before = calls(xero)
    assert connect().ensure_customers([customer(builders, 5, "Bakkerij Peeters")]) == {5: made["ContactID"]}
    assert (
        calls(xero)[GET_CONTACTS] == before[GET_CONTACTS] + 1
        and calls(xero)[PUT_CONTACTS] == before[PUT_CONTACTS]
    )


def test_a_refused_contact_gets_xeros_text_and_the_others_are_linked(xero, connect, builders):
    bad = builders.customer(5, name="Mailer BV", email="not-an-address")
    links = connect().ensure_customers([bad, customer(builders, 6)])
    assert links[5] == CustomerLinkFailure("data", f"{WHERE}: Email address must be valid.")
    assert isinstance(links[6], str)
    assert [c["code"] for c in sim(xero).customers()] == ["6"]


def test_an_archived_contact_is_not_replaced_by_a_new_one(xero, connect, builders):
    connector = connect()
    links = connector.ensure_customers([customer(builders, 8)])
    connector.hook.update("Contacts", "Contacts", [{"ContactID": links[8], "ContactStatus": "ARCHIVED"}])
    (failure,) = connect().ensure_customers([customer(builders, 8)]).values()
    assert isinstance(failure, CustomerLinkFailure) and "is archived in Xero; restore it" in failure.message
    assert len(sim(xero).customers()) == 1


def test_a_lost_contact_answer_is_settled_by_lookup(xero, connect, builders):
    control(xero, "faults", [{"method": "PUT", "path": "/Contacts$", "kind": "commit_then_drop", "times": 1}])
    links = connect().ensure_customers([customer(builders, 1), customer(builders, 2)])
    assert all(isinstance(link, str) for link in links.values())
    assert len(sim(xero).customers()) == 2


# -- OAuth and organisation ----------------------------------------------------------------------------------


def test_an_access_token_expiring_mid_run_is_refreshed_once_and_nothing_is_lost(
    xero, connect, builders, vault
):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    first = list(connector.push([builders.invoice(invoice_id=1, number="E-1", customer=alice)], links))
    stored = vault.load(CONN_ID)

    assert sim(xero).expire_tokens() == 1
    second = list(connector.push([builders.invoice(invoice_id=2, number="E-2", customer=alice)], links))
    assert [type(o) for o in first + second] == [Booked, Booked]
    assert sim(xero).create_posts() == {"E-1": 1, "E-2": 1}
    stats = sim(xero).stats_snapshot()
    assert stats["token_refreshes"] == 2
    new = vault.load(CONN_ID)
    assert new.access_token != stored.access_token
    assert new.refresh_token != stored.refresh_token  # Xero rotates refresh tokens: the new one is kept


def test_a_token_refused_again_after_a_refresh_asks_to_reconnect(xero, connect):
    control(xero, "faults", [{"method": "GET", "path": "/Invoices$", "kind": "status", "status": 401,
                              "body": {"title": "Unauthorized", "status": 401,
                                       "detail": "AuthenticationUnsuccessful"}, "times": 2}])  # fmt: skip
    with pytest.raises(AuthError, match=r"AuthenticationUnsuccessful.*reconnect the integration to Xero"):
        connect().find_booked(["x"])
    assert sim(xero).stats_snapshot()["token_refreshes"] == 2  # one new token, then no more guessing


def test_tokens_are_shared_through_the_vault(xero, connect, vault):
    connect().find_booked(["x"])
    connect().find_booked(["y"])  # another task: reuses the stored access token
    assert sim(xero).stats_snapshot()["token_refreshes"] == 1
    assert vault.saved == 1
    sim(xero).expire_tokens()
    connect().find_booked(["z"])  # spends the rotated refresh token from the vault, not the consent's
    assert sim(xero).stats_snapshot()["token_refreshes"] == 2


def test_a_refused_refresh_asks_to_reconnect(xero, connect, monkeypatch):
    set_connection(monkeypatch, xero.url, refresh_token="not-a-token")
    with pytest.raises(AuthError, match=r"invalid_grant.*reconnect the integration to Xero"):
        connect().find_booked(["x"])


def test_an_organisation_the_connection_may_not_use_names_the_ones_it_may(
    xero, connect, settings, monkeypatch, builders
):
    demo_only = sim(xero).consent(CLIENT_ID, [DEMO_TENANT_ID])["refresh_token"]
    set_connection(monkeypatch, xero.url, refresh_token=demo_only)
    second = replace(settings, extra={"tenant_id": SECOND_TENANT_ID})
    with pytest.raises(
        ConfigError, match=rf"not among .*\({DEMO_TENANT_NAME} \({DEMO_TENANT_ID}\)\); correct"
    ):
        connect(integration_settings=second).find_booked(["x"])

    nothing = sim(xero).consent(CLIENT_ID, [])["refresh_token"]
    set_connection(monkeypatch, xero.url, refresh_token=nothing)
    with pytest.raises(AuthError, match="reconnect the integration to Xero"):
        connect(token_vault=builders.vault()).find_booked(["x"])


def test_the_organisation_can_be_named_instead_of_given_by_id(xero, connect, settings, builders):
    named = replace(settings, extra={"tenant": SECOND_TENANT_NAME.upper()})
    connector = connect(integration_settings=named)
    outcomes = book(connector, builders.invoice(number="N-1", customer=customer(builders, 1)))
    assert [type(o) for o in outcomes] == [Booked]
    assert [b["tenant"] for b in sim(xero).booked()] == [SECOND_TENANT_ID]
    assert connector.hook.tenant_id == SECOND_TENANT_ID

    unknown = replace(settings, extra={"tenant": "Nope Ltd"})
    with pytest.raises(ConfigError, match=f"no organisation called 'Nope Ltd' .*{SECOND_TENANT_NAME}"):
        connect(integration_settings=unknown).find_booked(["x"])


def test_build_connector_needs_an_organisation(builders, vault, settings):
    integration = builders.integration(replace(settings, extra={}), conn_id=CONN_ID)
    with pytest.raises(ConfigError, match=r"tenant_id is not set; it must be a Xero tenant id"):
        build_connector(integration, vault)


# -- faults and limits ---------------------------------------------------------------------------------------


def test_a_5xx_on_a_write_is_unknown_and_on_a_read_is_retried(xero, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(
        xero,
        "faults",
        [
            {"method": "PUT", "path": "/Invoices$", "kind": "status", "status": 500, "times": 1},
            {"method": "GET", "path": "/Invoices$", "kind": "status", "status": 503, "times": 1},
        ],
    )
    (outcome,) = connector.push([builders.invoice(number="F-1", customer=alice)], links)
    assert isinstance(outcome, Unknown) and "HTTP 500" in outcome.message
    assert connector.find_booked(["F-1"]) == {}  # nothing was booked; the lookup was repeated


def test_an_injected_minute_429_is_waited_out_and_the_call_repeated(fast_xero, connect, builders):
    alice = customer(builders, 1)
    connector = connect()
    links = connector.ensure_customers([alice])
    control(fast_xero, "faults", [{"method": "PUT", "path": "/Invoices$", "kind": "rate_limit", "times": 1}])
    outcomes = list(connector.push([builders.invoice(number="Q-1", customer=alice)], links))
    assert [type(o) for o in outcomes] == [Booked]
    assert sim(fast_xero).create_posts() == {"Q-1": 1}
    assert sim(fast_xero).stats_snapshot()["rate_limited"] == 1
    assert connector.hook.budget.waited_s >= 1.0  # Retry-After: 1


def test_the_minute_limit_is_never_overrun_in_steady_state(fast_xero, connect, builders):
    """More calls than a minute allows wait for the next minute instead of meeting a 429."""
    sim(fast_xero).configure(minute_limit=4)
    connector = connect()
    alice = customer(builders, 1)
    links = connector.ensure_customers([alice])  # 2 calls
    for n in range(1, 8):
        assert isinstance(
            next(connector.push([builders.invoice(invoice_id=n, number=f"M-{n}", customer=alice)], links)),
            Booked,
        )
    assert sim(fast_xero).stats_snapshot()["rate_limited"] == 0
    assert connector.hook.budget.waited_s > 0
    assert len(sim(fast_xero).booked()) == 7


def test_a_spent_day_stops_the_organisations_run_until_the_next(fast_xero, connect, builders):
    sim(fast_xero).configure(day_limit=3)
    connector = connect()
    alice = customer(builders, 1)
    links = connector.ensure_customers([alice])  # 2 calls
    pushed = connector.push([builders.invoice(invoice_id=1, number="Y-1", customer=alice)], links)
    assert [type(o) for o in pushed] == [Booked]
    # The answer said no call is left today: the next push stops before sending.
    with pytest.raises(QuotaExceededError, match="daily API limit"):
        list(connector.push([builders.invoice(invoice_id=2, number="Y-2", customer=alice)], links))
    # A task that did not know meets Xero's 429 (X-Rate-Limit-Problem: day) and stops the same way.
    with pytest.raises(QuotaExceededError, match="X-Rate-Limit-Problem: day"):
        list(connect().push([builders.invoice(invoice_id=2, number="Y-2", customer=alice)], links))
    assert [b["reference"] for b in sim(fast_xero).booked()] == ["Y-1"]
    assert sim(fast_xero).stats_snapshot()["rate_limited_by"] == {"day": 1}


def test_api_calls_per_invoice_for_a_hundred_invoice_sync(xero, connect, builders):
    invoices = [
        builders.invoice(
            [builders.line("120.00", "21"), builders.line("45.50", "9", position=2, gl_account="7010")],
            invoice_id=n,
            number=f"2026-{n:04d}",
            customer=customer(builders, n),  # a new customer each
            invoice_date=date(2026, 3, 1 + n % 28),
        )
        for n in range(1, 101)
    ]
    outcomes = book(connect(), *invoices)
    assert [type(o) for o in outcomes] == [Booked] * 100
    stats = sim(xero).stats_snapshot()
    http = stats["http"]["total"]  # besides the API calls: the token and nothing else
    print(
        f"\n100-invoice Xero sync (100 new customers): {stats['total']} API calls "
        f"({stats['total'] / 100:.2f}/invoice), {stats['calls']}, "
        f"token refreshes {stats['token_refreshes']}, HTTP requests {http}"
    )
    assert stats["calls"] == {GET_CONTACTS: 2, PUT_CONTACTS: 2, PUT_INVOICES: 2}
    assert stats["token_refreshes"] == 1 and http == 7
    booked_total = sum(abs(b["total_incl_vat"]) for b in sim(xero).booked())
    assert booked_total == sum(i.total_incl_vat for i in invoices)


def test_request_timeout_comes_from_the_connection_and_no_secret_becomes_a_header(xero, connect):
    connector = connect()
    assert connector.request_timeout_s == CLIENT_TIMEOUT_S
    assert isinstance(connector.hook, XeroHook)
    assert connector.hook.session.auth is None  # the client secret goes to the token endpoint only
    assert not {"refresh_token", "token_url"} & {key.lower() for key in connector.hook.session.headers}
