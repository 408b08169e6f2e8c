"""Small, pure checks the rules are built from: ISO codes, VAT numbers, e-mail, control characters.

VAT numbers are checked with python-stdnum (each country's own check digits and format), never with
home-made patterns. The ISO lists are fixed here rather than read from a locale package at run time,
so what the sync refuses cannot change with an unrelated upgrade.
"""

from __future__ import annotations

import re

from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidFormat, InvalidLength, ValidationError
from stdnum.util import clean

COUNTRY_CODES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV
    BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES
    ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE
    IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU
    NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM
    SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE
    VG VI VN VU WF WS XK YE YT ZA ZM ZW
    """.split()
)
"""ISO 3166-1 alpha-2 country codes, plus XK (Kosovo), which the EU and most tools use."""

CURRENCY_CODES = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD
    CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF
    GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK
    LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD
    OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF
    YER ZAR ZMW ZWG
    """.split()
)
"""ISO 4217 codes of the currencies in use (legal tender somewhere in 2026)."""

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Control characters a bookkeeping field cannot hold; tab and newline are allowed."""

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
"""One address: something, one @, a domain with a dot. Deliberately loose: it refuses what no mail
server (and no accounting tool) accepts, not what is merely unusual."""

_VAT_PREFIXES = {"EL": "GR", "XI": "GB"}
"""VAT prefixes that are not the ISO code of their country (Greece, Northern Ireland)."""


def control_character(text: str | None) -> str | None:
    """Describe the first control character in ``text`` (``"U+0007 at position 4"``), or ``None``."""
    if not text:
        return None
    match = _CONTROL.search(text)
    if match is None:
        return None
    return f"U+{ord(match.group()):04X} at position {match.start() + 1}"


def valid_email(address: str) -> bool:
    return bool(_EMAIL.match(address))


def vat_number_problem(number: str, country_code: str | None) -> str | None:
    """Why ``number`` is not a valid VAT number, or ``None`` when it is (or cannot be checked).

    A number that starts with an EU prefix is checked by that member state's rules; one without a
    known prefix by the rules of the customer's country when python-stdnum has them. Countries without
    a checkable format are accepted: the tool and the tax office have the last word there.
    """
    compact = clean(number, " -./,").upper().strip()
    if not compact:
        return "has no characters besides spaces and dots"
    prefix = compact[:2].upper()
    try:
        if prefix.lower() in eu_vat.MEMBER_STATES or prefix == "EL":
            eu_vat.validate(compact)
            return None
        country = (country_code or "").upper()
        module = get_cc_module(country.lower(), "vat") if country else None
        if module is None:
            return None
        module.validate(number)
        return None
    except InvalidChecksum:
        return "has wrong check digits"
    except InvalidLength:
        return "has the wrong number of characters"
    except (InvalidFormat, InvalidComponent):
        return "is not in that country's format"
    except ValidationError:
        return "is not valid"


def vat_country(number: str, country_code: str | None) -> str:
    """The country a VAT number belongs to, for messages: its prefix, else the customer's country."""
    prefix = number.strip()[:2].upper()
    if prefix.isalpha() and (prefix.lower() in eu_vat.MEMBER_STATES or prefix in _VAT_PREFIXES):
        return _VAT_PREFIXES.get(prefix, prefix)
    return (country_code or "").upper() or "unknown"
