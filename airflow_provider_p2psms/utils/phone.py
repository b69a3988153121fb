"""Iranian mobile numbers: parsing any common spelling, and masking for logs.

Parsing accepts what users keep in their tables: ``09121234567``, ``9121234567``, ``+98 912 123 4567``,
``0098-912-123-4567``, ``(0912) 123 4567``, Persian (``۰۹۱۲...``) and Arabic-Indic (``٠٩١٢...``) digits,
and integers or floats that lost the leading zero. The gateway decides the output form; this module
returns the 10-digit national significant number (``9121234567``).

``phonenumbers`` has the final word on validity and on the kind of number (mobile, landline). Its
metadata import and its parser are slow for hundreds of thousands of rows, so the common spellings
take a regular-expression path, and the validity verdict is cached per number prefix where the
metadata's mobile pattern ends in free digits (the prefix then decides, whatever those digits are).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

IRAN_COUNTRY_CODE = 98

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_SEPARATORS = re.compile(r"[\s\-().\u200c\u200e\u200f\u202a-\u202e/]+")
_COMMON_FORM = re.compile(r"(?:\+98|0098|98|0)?(9\d{9})")
_PLAIN_NUMBER = re.compile(r"\+?\d+")


def to_ascii_digits(text: str) -> str:
    """Replace Persian (``۰۹۱۲``) and Arabic-Indic (``٠٩١٢``) digits in ``text`` with ASCII digits."""
    return text.translate(_DIGITS)


def mask_phone(value: Any) -> str:
    """
    Mask a phone number (or any value found where one was expected) for logs and reports.

    At least five characters are hidden, so a mask leaves 100,000 candidates or more:
    ``09121234567`` becomes ``0912*****67``, ``+989121234567`` ``+989*******67``; values shorter than
    seven characters are hidden whole.
    """
    if value is None:
        return "<none>"
    text = str(value).strip()
    if not text:
        return "<empty>"
    length = len(text)
    if length >= 11:
        head, tail = 4, 2
    elif length >= 9:
        head, tail = 2, 2
    elif length >= 7:
        head, tail = 1, 1
    else:
        return "***"
    return f"{text[:head]}{'*' * (length - head - tail)}{text[-tail:]}"


@cache
def _prefix_length() -> int:
    """How many leading digits of a 10-digit mobile number decide its validity, per the metadata."""
    import phonenumbers

    metadata = phonenumbers.PhoneMetadata.metadata_for_region("IR")
    pattern = (metadata.mobile.national_number_pattern if metadata and metadata.mobile else None) or ""
    tail = re.search(r"\\d\{(\d+)\}$", pattern)
    if not tail or _has_top_level_alternation(pattern):
        return 10
    return max(1, 10 - int(tail.group(1)))


def _has_top_level_alternation(pattern: str) -> bool:
    """Whether ``pattern`` has a ``|`` outside every group (then its tail does not bind every branch)."""
    depth = 0
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
    return False


_VERDICTS: dict[str, str | None] = {}


def _mobile_verdict(national: str) -> str | None:
    """Return ``None`` if ``national`` (10 digits) is an Iranian mobile number, else the reason."""
    prefix = national[: _prefix_length()]
    try:
        return _VERDICTS[prefix]
    except KeyError:
        import phonenumbers

        number = phonenumbers.PhoneNumber(country_code=IRAN_COUNTRY_CODE, national_number=int(national))
        verdict = _VERDICTS[prefix] = _kind_problem(number)
        return verdict


def _kind_problem(number: Any) -> str | None:
    import phonenumbers
    from phonenumbers import PhoneNumberType

    if number.country_code != IRAN_COUNTRY_CODE:
        return (
            f"is a foreign number (country code +{number.country_code}); "
            "only Iranian mobile numbers (+98 9xx) can be texted"
        )
    if not phonenumbers.is_valid_number(number):
        return "is not a valid Iranian mobile number (expected 11 digits like 0912 123 4567)"
    kind = phonenumbers.number_type(number)
    if kind in (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE):
        return None
    if kind == PhoneNumberType.FIXED_LINE:
        return "is a landline; SMS needs a mobile number (09xx...)"
    return "is not a mobile number; SMS needs a mobile number (09xx...)"


def to_national_mobile(value: Any) -> str:
    """
    Parse ``value`` as an Iranian mobile number and return its 10 national digits (``9121234567``).

    :param value: a string in any common spelling, or an int/float that lost its leading zero.
    :raises InvalidPhoneNumber: with a masked copy of the value and the reason, if it is not one.
    """
    from airflow_provider_p2psms.exceptions import InvalidPhoneNumber

    if value is None:
        raise InvalidPhoneNumber("<none>", "the phone number is missing (None)")
    if isinstance(value, bool):
        raise InvalidPhoneNumber(str(value), "a boolean is not a phone number")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidPhoneNumber(mask_phone(value), "a number with a fraction is not a phone number")
        value = int(value)
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidPhoneNumber(mask_phone(value), f"expected a string or a number, got {type(value).__name__}")

    compact = _SEPARATORS.sub("", to_ascii_digits(text))
    if not compact:
        raise InvalidPhoneNumber("<empty>", "the phone number is empty")

    common = _COMMON_FORM.fullmatch(compact)
    if common:
        national = common.group(1)
        problem = _mobile_verdict(national)
        if problem:
            raise InvalidPhoneNumber(mask_phone(compact), problem)
        return national

    if not _PLAIN_NUMBER.fullmatch(compact):
        raise InvalidPhoneNumber(mask_phone(compact), "contains characters that are not digits")

    import phonenumbers

    try:
        parsed = phonenumbers.parse(compact, "IR")
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(
            mask_phone(compact), "is not a phone number (expected 11 digits like 0912 123 4567)"
        ) from None
    problem = _kind_problem(parsed)
    if problem:
        raise InvalidPhoneNumber(mask_phone(compact), problem)
    return str(parsed.national_number)


_NUMBER_IN_TEXT = re.compile(r"\+?[0-9۰-۹٠-٩][0-9۰-۹٠-٩ \-]{5,}[0-9۰-۹٠-٩]")


def mask_numbers_in_text(text: str) -> str:
    """Mask every run of seven or more digits (spaces and dashes allowed) in a text meant for a log."""

    def masked(match: re.Match[str]) -> str:
        run = match.group(0)
        digits = sum(ch.isdigit() for ch in run)
        return mask_phone(run) if digits >= 7 else run

    return _NUMBER_IN_TEXT.sub(masked, text)
