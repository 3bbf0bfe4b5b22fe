"""Money as int wei: parse what users type ("1.5eth", "250 gwei", "3credit", "1000") and format it back.

Floats never touch an amount: text is parsed with `Decimal` in a context wide enough to be exact, and
a fraction finer than the unit allows is an error rather than a silent rounding. A bare number is wei.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation, localcontext

from wwwserve.ledger.errors import InvalidAmountError
from wwwserve.ledger.params import WEI_PER_CREDIT, WEI_PER_ETH

MAX_UINT256 = 2**256 - 1

# unit name (lower case) -> wei per unit
UNITS: dict[str, int] = {
    "wei": 1,
    "gwei": 10**9,
    "credit": WEI_PER_CREDIT,
    "credits": WEI_PER_CREDIT,
    "eth": WEI_PER_ETH,
    "ether": WEI_PER_ETH,
}

# How format_wei writes each unit it can be asked for.
_DISPLAY = {"wei": "wei", "gwei": "gwei", "credit": "credit", "eth": "ETH"}
_ALIASES = {"ether": "eth", "credits": "credit"}

_AMOUNT_RE = re.compile(r"^(?P<sign>[-+]?)(?P<number>[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)\s*(?P<unit>[a-z]*)$")


def _decimals(wei_per_unit: int) -> int:
    """Decimal places a unit allows: 18 for ETH, 9 for gwei, 15 for credit, 0 for wei."""
    return len(str(wei_per_unit)) - 1


def parse_amount(text: str | int) -> int:
    """Parse an amount of money into int wei.

    Accepts an int (already wei) or text: a non-negative decimal number followed by an optional unit
    (wei, gwei, credit(s), eth/ether; case-insensitive, space optional). Without a unit the number is
    wei and must be whole. Raises InvalidAmountError with the reason otherwise.
    """
    if isinstance(text, bool):
        raise InvalidAmountError(f"amount must be a number, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise InvalidAmountError(f"amount must not be negative, got {text} wei")
        if text > MAX_UINT256:
            raise InvalidAmountError(f"amount {text} wei does not fit in uint256")
        return text
    if not isinstance(text, str):
        raise InvalidAmountError(f"amount must be text or int wei, got {type(text).__name__}")
    cleaned = text.strip().lower()
    if not cleaned:
        raise InvalidAmountError("amount is empty: give a number with an optional unit, e.g. '1.5 eth'")
    match = _AMOUNT_RE.match(cleaned)
    if match is None:
        raise InvalidAmountError(
            f"cannot parse amount {text!r}: expected a number with an optional unit, e.g. '1.5 eth', "
            f"'250 gwei', '3 credit' or '1000' (wei)"
        )
    if match["sign"] == "-":
        raise InvalidAmountError(f"amount must not be negative, got {text.strip()!r}")
    unit = match["unit"] or "wei"
    if unit not in UNITS:
        raise InvalidAmountError(f"unknown unit {match['unit']!r} in {text.strip()!r}: use one of {', '.join(UNITS)}")
    per_unit = UNITS[unit]
    digits = match["number"].replace("_", "")
    # Wide enough for every digit of the input plus the unit's scale, so nothing below rounds.
    with localcontext() as ctx:
        ctx.prec = len(digits) + _decimals(per_unit) + 10
        try:
            number = Decimal(digits)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
            raise InvalidAmountError(f"cannot parse amount {text!r}") from exc
        wei = number * per_unit
        if wei != wei.to_integral_value():
            places = _decimals(per_unit)
            raise InvalidAmountError(
                f"amount {text.strip()!r} has more decimal places than {unit} allows ({places})"
                if places
                else f"amount {text.strip()!r} must be a whole number of wei"
            )
        result = int(wei)
    if result > MAX_UINT256:
        raise InvalidAmountError(f"amount {text.strip()!r} does not fit in uint256")
    return result


def format_wei(wei: int, unit: str = "eth") -> str:
    """Format int wei exactly in `unit` (eth, gwei, credit or wei), without trailing zeros: "1.5 ETH"."""
    if isinstance(wei, bool) or not isinstance(wei, int):
        raise InvalidAmountError(f"format_wei needs int wei, got {type(wei).__name__}")
    key = _ALIASES.get(unit.lower(), unit.lower())
    if key not in _DISPLAY:
        raise InvalidAmountError(f"unknown unit {unit!r}: use one of {', '.join(_DISPLAY)}")
    per_unit = UNITS[key]
    whole, frac = divmod(abs(wei), per_unit)
    sign = "-" if wei < 0 else ""
    text = f"{sign}{whole}"
    if frac:
        text += "." + str(frac).rjust(_decimals(per_unit), "0").rstrip("0")
    return f"{text} {_DISPLAY[key]}"
