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

Encoding = Literal["GSM-7", "UCS-2"]


def sms_encoding(text: str) -> Encoding:
    """Return the encoding a gateway must use for ``text``."""
    for char in text:
        if char not in _GSM7_BASIC and char not in _GSM7_EXTENSION:
            return "UCS-2"
    return "GSM-7"


def count_sms_parts(text: str) -> int:
    """Return the number of SMS parts ``text`` is billed as (0 for an empty text)."""
    if sms_encoding(text) == "GSM-7":
        units = sum(2 if char in _GSM7_EXTENSION else 1 for char in text)
        single, per_part = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, per_part = 70, 67
    if units == 0:
        return 0
    if units <= single:
        return 1
    return -(-units // per_part)
