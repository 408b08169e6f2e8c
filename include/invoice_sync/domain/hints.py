"""Turn an error into the next step a bookkeeper can take.

The tool's own text stays in the message (it is what the tool's help pages are searched by); the hint
adds where to fix it. Patterns are matched case-insensitively against the message.
"""

from __future__ import annotations

from invoice_sync.domain.models import ErrorClass

_HINTS: tuple[tuple[str, str], ...] = (
    ("which no country charges", "Correct the line's VAT rate in the app."),
    # rows and settings the sync cannot read: the message names table, column and value
    ("cannot be read", "Correct the integration's settings in the app; the message names the key."),
    ("is empty (null)", "Fill in the empty field named in the message in the app."),
    ("which the sync does not know", "Correct the value named in the message in the app."),
    ("tax rates", "Map the tax rate to the tool's VAT code in the integration's tax rates, then sync again."),
    ("not mapped", "Add the missing mapping in the integration's settings, then sync again."),
    # data problems found before any call; their messages already say what to change
    ("control character", "Remove the invisible control character from that field in the app."),
    ("same number as another invoice", "Give one of the two invoices a new number in the app."),
    ("already has account", "Merge the two relations in the accounting tool, or correct the VAT number."),
    ("vat number", "Correct the customer's VAT number in the app (leave it empty for a private person)."),
    ("country code", "Correct the customer's country in the app."),
    ("currency code", "Correct the invoice's currency in the app."),
    ("credits invoice", "Get the credited invoice booked first, then sync the credit note again."),
    ("is longer than", "Shorten that field in the app: the accounting tool does not accept it this long."),
    ("too long", "Shorten that field in the app: the accounting tool does not accept it this long."),
    ("due date", "Correct the invoice's due date in the app."),
    ("quantity", "Correct the line in the app so quantity times unit price gives its amount."),
    ("no description", "Describe every line of the invoice in the app."),
    ("nothing to book", "Add the missing amounts or cancel the invoice in the app."),
    ("vat code", "Check the VAT-code mapping: the code must exist, be a sales code and not be blocked."),
    # before "journal": Exact's duplicate text always names the journal ("Already exists – ..., Journal: 70")
    ("already exists", "The tool already has this number: check whether it was booked by hand."),
    ("journal", "Pick a sales journal in the integration's settings."),
    ("ledger account", "Map the line's GL account to an active revenue account in the accounting tool."),
    ("g/l account", "Map the line's GL account to an active revenue account in the accounting tool."),
    (
        "periode is afgesloten",
        "The period is closed in the accounting tool: ask the accountant to reopen it.",
    ),
    ("financial year", "The financial year does not exist in the accounting tool yet: ask the accountant."),
    ("payment condition", "Set a payment term on the customer or a default in the integration."),
    ("wisselkoers", "The journal does not accept foreign currency: use another journal or book in EUR."),
    ("e-mail", "Correct the customer's e-mail address in the app."),
    ("email", "Correct the customer's e-mail address in the app."),
    ("customer", "Check the customer in the app and in the accounting tool."),
    ("add up", "Correct the invoice in the app so the lines and totals agree."),
    ("no lines", "Add lines to the invoice in the app."),
    ("negative total", "Make it a credit note in the app: an invoice cannot give money back."),
)

_BY_CLASS = {
    ErrorClass.AUTH: "Reconnect the integration: the accounting tool no longer accepts its authorisation.",
    ErrorClass.QUOTA: "The tool's daily limit was reached; the rest follows in the next run.",
    ErrorClass.TRANSIENT: "A temporary problem; the next run tries again.",
    ErrorClass.CONFIG: "Fix the integration's settings, then sync again.",
    ErrorClass.DATA: "Fix the invoice or customer in the app, then sync again.",
}


def fix_hint(error_class: str | None, message: str | None) -> str:
    text = (message or "").lower()
    for pattern, hint in _HINTS:
        if pattern in text:
            return hint
    try:
        return _BY_CLASS[ErrorClass(error_class or "data")]
    except ValueError:
        return _BY_CLASS[ErrorClass.DATA]
