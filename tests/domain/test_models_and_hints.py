"""Value objects that parse settings, the VAT-rate key, and the bookkeeper's next step for an error."""

from __future__ import annotations

from decimal import Decimal

import pytest

from invoice_sync.domain.hints import fix_hint
from invoice_sync.domain.models import ErrorClass, IntegrationSettings, SettingsError, rate_key

# -- rate_key ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "key"),
    [
        (Decimal("21.00"), "21"),
        (Decimal("21"), "21"),
        ("21.0", "21"),
        (21, "21"),
        (21.0, "21"),
        (Decimal("5.50"), "5.5"),
        (5.5, "5.5"),
        (Decimal("0.00"), "0"),
        (0, "0"),
        (Decimal("10"), "10"),  # normalize() alone would give 1E+1
        (Decimal("100.00"), "100"),
        ("12", "12"),
    ],
)
def test_rate_key_normalises_every_spelling_of_a_rate(rate, key):
    assert rate_key(rate) == key


# -- IntegrationSettings.from_json --------------------------------------------------------------------


def test_settings_from_json_parses_known_keys_and_keeps_the_rest():
    settings = IntegrationSettings.from_json(
        {
            "journal": "70",
            "credit_note_journal": "71",
            "vat_codes": {"21.00": 4, "6": "1", "0.0": "0", "10": "7"},
            "gl_accounts": {"7000": "guid-7000"},
            "default_gl_account": "guid-7000",
            "payment_condition": "30",
            "division": "123456",
            "mystery": {"kept": True},
        }
    )
    assert settings.journal == "70"
    assert settings.credit_note_journal == "71"
    assert settings.vat_codes == {"21": "4", "6": "1", "0": "0", "10": "7"}
    assert settings.gl_accounts == {"7000": "guid-7000"}
    assert settings.default_gl_account == "guid-7000"
    assert settings.payment_condition == "30"
    # a tool's own fields are left for its typed settings to read (tests/connectors/test_settings.py)
    assert settings.extra == {"division": "123456", "mystery": {"kept": True}}


@pytest.mark.parametrize("data", [None, {}])
def test_settings_from_nothing_are_the_defaults(data):
    settings = IntegrationSettings.from_json(data)
    assert settings == IntegrationSettings()
    assert settings.vat_codes == {} and settings.extra == {}


def test_settings_from_json_tolerates_nulls_and_does_not_change_its_input():
    data = {"vat_codes": None, "journal": None, "office": "NLA001"}
    settings = IntegrationSettings.from_json(data)
    assert settings.vat_codes == {} and settings.journal is None and settings.extra == {"office": "NLA001"}
    assert data == {"vat_codes": None, "journal": None, "office": "NLA001"}


def test_settings_map_tax_rate_codes_and_a_discount_account():
    settings = IntegrationSettings.from_json(
        {"tax_rates": {"intra_community": "IC0", "export": 5}, "discount_gl_account": 7050}
    )
    assert settings.tax_rates == {"intra_community": "IC0", "export": "5"}
    assert settings.discount_gl_account == "7050"
    assert settings.extra == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["vat_codes"], "the settings are ['vat_codes'], not a JSON object"),
        (
            {"vat_codes": ["21", "6"]},
            "vat_codes is ['21', '6']; it must map the app's codes to the tool's codes",
        ),
        ({"vat_codes": {"standard": "4"}}, "vat_codes has the key 'standard', which is not a VAT percentage"),
        ({"vat_codes": {"21": None}}, "vat_codes['21'] is None; map it to one of the tool's codes"),
        ({"tax_rates": {"exempt": {"code": 1}}}, "tax_rates['exempt'] is {'code': 1}; it must be a code"),
        ({"journal": ["70"]}, "journal is ['70']; it must be a code (text)"),
        ({"demo": "yes"}, "demo is 'yes'; it must be true or false"),
        ({"demo": 1}, "demo is 1; it must be true or false"),
    ],
)
def test_settings_that_cannot_be_read_name_the_key_and_the_value(data, message):
    with pytest.raises(SettingsError) as raised:
        IntegrationSettings.from_json(data)
    assert message in str(raised.value)


# -- fix_hint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_class", "message", "fragment"),
    [
        ("config", "VAT rate 9% is not mapped to an Exact VAT code for division 123456", "missing mapping"),
        ("config", "Invalid: VAT code 5 is blocked", "VAT-code mapping"),
        ("config", "Exact Online division 123456: Blocked: Ledger account", "GL account"),
        ("data", "Exact Online division 123456: Periode is afgesloten: 2026-01", "period is closed"),
        ("data", "Customer Bad Mail could not be created in the tool: Invalid: Email [x@@y]", "e-mail"),
        (
            "data",
            "Customer Refused NV could not be created in the tool: Invalid: Customer (Type)",
            "customer",
        ),
        ("data", "Invoice 1: the lines add up to 500.00 EUR but the total excluding VAT is 550.00", "agree"),
        ("data", "Invoice 1 has no lines", "Add lines"),
        (
            "data",
            "Invoice 1 has a negative total; an invoice that gives money back must be ...",
            "credit note",
        ),
        ("data", "invoices.status of invoice #4 is 'cancelled', which the sync does not know", "value named"),
        ("data", "invoice_lines.amount of line 1 of invoice #4 is empty (NULL)", "empty field"),
        (
            "config",
            "integrations.settings of integration #5 cannot be read: division is 'x'",
            "names the key",
        ),
        (
            "config",
            "Tax rate 'export' (0%) is not mapped ...; add it to the integration's tax rates",
            "tax rates",
        ),
        ("data", "Already exists – Entry number: 1, Journal: 70", "booked by hand"),
    ],
)
def test_a_known_message_gets_its_specific_hint(error_class, message, fragment):
    assert fragment in fix_hint(error_class, message)


@pytest.mark.parametrize(
    ("error_class", "fragment"),
    [
        (ErrorClass.AUTH, "Reconnect"),
        ("quota", "daily limit"),
        ("transient", "temporary"),
        ("config", "integration's settings"),
        ("data", "Fix the invoice"),
    ],
)
def test_an_unknown_message_gets_the_hint_of_its_class(error_class, fragment):
    assert fragment in fix_hint(error_class, "something nobody foresaw")


@pytest.mark.parametrize(("error_class", "message"), [(None, None), ("no-such-class", ""), (None, "zzz")])
def test_a_missing_or_unknown_class_falls_back_to_data(error_class, message):
    assert fix_hint(error_class, message) == fix_hint("data", "zzz")


def test_hints_match_case_insensitively():
    assert fix_hint("data", "PERIODE IS AFGESLOTEN") == fix_hint("data", "periode is afgesloten")
