"""Where a message went: country and carrier lookup data, from two maintained packages.

* ``mcc-mnc-p1`` (P1 Security's tables, from the ITU-T bulletins and Wikipedia) names the
  country of a mobile country code (MCC) and the carrier of an MCC+MNC pair, which Plivo
  reports on ``sent`` and later callbacks.
* ``phonenumbers`` (Google's libphonenumber) names the region of a recipient's number, the
  fallback when no MCC was reported (a message that failed before reaching a carrier).

The analytics view folds in SQL, so this data goes into two lookup tables when the view's
tables are built (:func:`network_rows`, :func:`number_prefix_rows`); both packages'
versions are part of the view's version (:data:`DATA_VERSION`), so that a data update
rebuilds the view instead of leaving old and new lookups mixed.
"""

from __future__ import annotations

import functools
from importlib.metadata import version
from typing import Any, Final

import phonenumbers
from mcc_mnc_lut.p1_mcc import P1_MCC
from mcc_mnc_lut.p1_mnc import P1_MNC

#: The lookup data's identity: a change rebuilds the analytics view.
DATA_VERSION: Final = f"mcc-mnc-p1 {version('mcc-mnc-p1')}; phonenumbers {version('phonenumbers')}"
#: The MNC stored for an MCC's own row (its country, no carrier).
ANY_NETWORK: Final = -1
# Digits appended to a prefix to make a number phonenumbers can place (their values do not
# matter, only that the number has a plausible length).
_FILLER: Final = "23456789012345"


def _entries(value: Any) -> list[dict[str, Any]]:
    """The package lists a code shared by several countries as a list of entries."""
    return list(value) if isinstance(value, list) else [value]


def _mcc_country(mcc: str) -> str | None:
    """The country of an MCC: for a code several territories share (310: the US, Guam, …),
    the one holding most of its networks."""
    entries = [e for e in _entries(P1_MCC.get(mcc, [])) if e.get("cc2")]
    if not entries:
        return None
    return str(max(entries, key=lambda e: len(e.get("mncs") or ()))["cc2"])


@functools.cache
def network_rows() -> tuple[tuple[str, int, str, str], ...]:
    """``(mcc, mnc, country, carrier)`` rows: one per MCC with :data:`ANY_NETWORK` and no
    carrier, and one per network. MNCs are stored as numbers, so that Plivo's ``MNC=80``
    and ``080`` find the same network; the carrier is its brand, else its operator."""
    rows: dict[tuple[str, int], tuple[str, str]] = {}
    for mcc in sorted(P1_MCC):
        if mcc.isdigit() and (country := _mcc_country(mcc)):
            rows[(mcc, ANY_NETWORK)] = (country, "")
    for code in sorted(P1_MNC):
        mcc, mnc = code[:3], code[3:]
        if not (mcc.isdigit() and mnc.isdigit()) or (mcc, int(mnc)) in rows:
            continue
        home = _mcc_country(mcc)
        entries = _entries(P1_MNC[code])
        entry = next((e for e in entries if home in (e.get("cc2s") or ())), entries[0])
        countries = entry.get("cc2s") or ([home] if home else [])
        carrier = (entry.get("brand") or entry.get("operator") or "").strip()
        if countries and carrier:
            country = home if home in countries else countries[0]
            rows[(mcc, int(mnc))] = (str(country), carrier)
    return tuple((mcc, mnc, country, carrier) for (mcc, mnc), (country, carrier) in rows.items())


def _region(number: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse("+" + number))
    except phonenumbers.NumberParseException:
        return None


@functools.cache
def number_prefix_rows() -> tuple[tuple[str, str], ...]:
    """``(prefix, country)`` rows: the longest prefix of an E.164 number (digits, no ``+``)
    found here names its country. One row per calling code, its main country; where several
    countries share a code, a row per following digits that place a number elsewhere (three
    digits for +1, whose area codes split the US, Canada and the Caribbean; two for others)."""
    rows: dict[str, str] = {}
    for code, regions in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items()):
        countries = [
            region for region in regions if region != phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
        ]
        if not countries:
            continue
        main, calling = countries[0], str(code)
        rows[calling] = main
        if len(countries) == 1:
            continue
        example = phonenumbers.example_number(main)
        length = len(str(example.national_number)) if example else 10
        digits = 3 if code == 1 else 2
        for n in range(10**digits):
            prefix = f"{n:0{digits}d}"
            region = _region(calling + prefix + _FILLER[: max(0, length - digits)])
            if region and region != main:
                rows[calling + prefix] = region
    return tuple(sorted(rows.items()))


#: The longest prefix in :func:`number_prefix_rows` (a calling code and its extra digits).
MAX_PREFIX: Final = 6
