"""SMS segment counting: GSM-7 and UCS-2 single-message and concatenated-part boundaries."""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.utils.text import count_sms_parts, sms_encoding, stand_in_text

PERSIAN = "س"  # one UTF-16 unit
EMOJI = "😀"  # two UTF-16 units (a surrogate pair)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 0),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("a" * 459, 3),
        ("a" * 460, 4),
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà" * 2, 1),
    ],
    ids=lambda value: f"len{len(value)}" if isinstance(value, str) else str(value),
)
def test_gsm7_boundaries(text, parts):
    assert sms_encoding(text) == "GSM-7"
    assert count_sms_parts(text) == parts


@pytest.mark.parametrize("char", list("^{}\\[~]|€"))
def test_gsm7_extension_characters_count_two(char):
    assert sms_encoding(char) == "GSM-7"
    assert count_sms_parts(char * 80) == 1
    assert count_sms_parts(char * 81) == 2
    assert count_sms_parts("a" * 159 + char) == 2
    assert count_sms_parts("a" * 158 + char) == 1


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (PERSIAN, 1),
        (PERSIAN * 70, 1),
        (PERSIAN * 71, 2),
        (PERSIAN * 134, 2),
        (PERSIAN * 135, 3),
        (PERSIAN * 201, 3),
        (PERSIAN * 202, 4),
        ("سلام نازنین، کد شما A1", 1),
        ("a" * 69 + PERSIAN, 1),  # one Persian letter turns the whole text into UCS-2
        ("a" * 70 + PERSIAN, 2),
    ],
    ids=lambda value: f"len{len(value)}" if isinstance(value, str) else str(value),
)
def test_ucs2_boundaries_for_persian(text, parts):
    assert sms_encoding(text) == "UCS-2"
    assert count_sms_parts(text) == parts


def test_emoji_count_as_two_utf16_units():
    assert sms_encoding(EMOJI) == "UCS-2"
    assert count_sms_parts(EMOJI * 35) == 1
    assert count_sms_parts(EMOJI * 36) == 2
    assert count_sms_parts(PERSIAN * 68 + EMOJI) == 1
    assert count_sms_parts(PERSIAN * 69 + EMOJI) == 2


@pytest.mark.parametrize("char", ["â", "`", "\t", "ğ", "،"])
def test_one_character_outside_gsm7_makes_the_text_ucs2(char):
    assert sms_encoding("a" * 100 + char) == "UCS-2"
    assert count_sms_parts("a" * 100 + char) == 2


@pytest.mark.parametrize(
    "text", ["hi", "x" * 160, "x" * 161, "x" * 400, "{" * 100, "سلام", "س" * 70, "س" * 71, "س" * 300]
)
def test_a_stand_in_text_is_billed_like_the_text_and_shares_none_of_it(text: str) -> None:
    stand_in = stand_in_text(text)
    assert count_sms_parts(stand_in) == count_sms_parts(text)
    assert sms_encoding(stand_in) == sms_encoding(text)
    assert len(set(stand_in)) == 1  # one filler character: nothing of the recipient's text
