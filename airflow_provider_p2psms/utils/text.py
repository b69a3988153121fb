"""SMS segment counting: how many billable parts a text needs.

A text that fits the GSM 03.38 alphabet travels as GSM-7: 160 characters in one SMS, 153 per part
when concatenated; the extension characters (``^{}[]~|€\\``) take two. Anything else, Persian
included, travels as UCS-2: 70 UTF-16 code units in one SMS, 67 per part.
"""

from __future__ import annotations

from typing import Literal

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM7 = _GSM7_BASIC | _GSM7_EXTENSION

Encoding = Literal["GSM-7", "UCS-2"]


def sms_encoding(text: str) -> Encoding:
    """Return the encoding a gateway must use for ``text``."""
    return "GSM-7" if _GSM7.issuperset(text) else "UCS-2"


def count_sms_parts(text: str) -> int:
    """Return the number of SMS parts ``text`` is billed as (0 for an empty text)."""
    if sms_encoding(text) == "GSM-7":
        units = len(text) + sum(text.count(char) for char in _GSM7_EXTENSION)
        single, per_part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, per_part = 70, 67
    if units == 0:
        return 0
    if units <= single:
        return 1
    return -(-units // per_part)


def stand_in_text(text: str) -> str:
    """
    A text of no one's words that is billed like ``text``: the same encoding and as many parts.

    Pricing a campaign asks the gateway about one text per parts count; this one is asked instead of a
    recipient's own, which carries their name or code.
    """
    parts = count_sms_parts(text)
    gsm = sms_encoding(text) == "GSM-7"
    single, per_part = (160, 153) if gsm else (70, 67)
    length = single if parts <= 1 else per_part * parts
    return ("x" if gsm else "ب") * length
