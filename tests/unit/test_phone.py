"""Iranian mobile numbers: every spelling users keep in their tables, the refusals, and masking."""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.exceptions import InvalidPhoneNumber
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.utils.phone import mask_phone, to_ascii_digits, to_national_mobile

# spelling -> 10-digit national number
VALID = [
    ("09121234567", "9121234567"),
    ("9121234567", "9121234567"),
    ("+989121234567", "9121234567"),
    ("00989121234567", "9121234567"),
    ("989121234567", "9121234567"),
    ("0912 123 4567", "9121234567"),
    ("0912-123-4567", "9121234567"),
    ("(0912) 123-4567", "9121234567"),
    ("+98 (912) 123 45 67", "9121234567"),
    ("0098-912-123-4567", "9121234567"),
    ("  09121234567\t", "9121234567"),
    ("0912.123.4567", "9121234567"),
    ("\u202a+989121234567\u202c", "9121234567"),  # left-to-right embedding, as pasted from a Persian page
    ("۰۹۱۲۱۲۳۴۵۶۷", "9121234567"),  # Persian digits
    ("٠٩١٢١٢٣٤٥٦٧", "9121234567"),  # Arabic-Indic digits
    ("+۹۸ ۹۱۲ ۱۲۳ ۴۵۶۷", "9121234567"),
    ("09351234567", "9351234567"),
    ("09011234567", "9011234567"),
    ("09901234567", "9901234567"),
    (9121234567, "9121234567"),  # an int column lost the leading zero
    (9121234567.0, "9121234567"),  # a float column (pandas with NaNs) did too
    (989121234567, "9121234567"),
]

# value -> words the reason must contain
INVALID = [
    (None, "missing"),
    ("", "empty"),
    ("   ", "empty"),
    ("-- ()", "empty"),
    (True, "boolean"),
    (False, "boolean"),
    (1.5, "fraction"),
    (9121234567.5, "fraction"),
    ("02112345678", "landline"),
    ("+982112345678", "landline"),
    ("+447911123456", "foreign"),
    ("00447911123456", "foreign"),
    ("0912123456", "not a valid Iranian mobile number"),  # one digit short
    ("091212345678", "not a valid Iranian mobile number"),  # one digit long
    ("912", "not a valid Iranian mobile number"),
    ("0912abc4567", "not digits"),
    ("phone", "not digits"),
    ("0912+1234567", "not digits"),
    ("+999123456789", "is not a phone number"),  # no such country code
    ("0", "is not a phone number"),
    (["09121234567"], "expected a string or a number, got list"),
]


@pytest.mark.parametrize(("value", "national"), VALID, ids=[repr(v) for v, _ in VALID])
def test_common_spellings_give_the_national_number(value, national):
    assert to_national_mobile(value) == national


@pytest.mark.parametrize(("value", "reason"), INVALID, ids=[repr(v) for v, _ in INVALID])
def test_invalid_values_are_refused_with_a_reason(value, reason):
    with pytest.raises(InvalidPhoneNumber) as caught:
        to_national_mobile(value)
    assert reason in caught.value.reason
    assert str(caught.value) == f"{caught.value.masked}: {caught.value.reason}"


@pytest.mark.parametrize("value", ["02112345678", "+447911123456", "091212345678", "0912abc4567"])
def test_the_error_never_shows_the_whole_number(value):
    with pytest.raises(InvalidPhoneNumber) as caught:
        to_national_mobile(value)
    assert value not in str(caught.value)
    assert caught.value.masked == mask_phone(value)


def test_invalid_phone_number_is_a_value_error():
    with pytest.raises(ValueError, match="landline"):
        to_national_mobile("02112345678")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("09121234567", "0912*****67"),
        ("+989121234567", "+989*******67"),
        ("00989121234567", "0098********67"),
        ("9121234567", "91******67"),
        ("123456789", "12*****89"),
        ("12345678", "1******8"),
        ("1234567", "1*****7"),
        ("123456", "***"),
        ("12345", "***"),
        ("1234", "***"),
        ("", "<empty>"),
        ("   ", "<empty>"),
        (None, "<none>"),
        (9121234567, "91******67"),
    ],
)
def test_mask_phone(value, masked):
    assert mask_phone(value) == masked


@pytest.mark.parametrize("length", range(1, 25))
def test_masking_always_hides_at_least_five_characters(length):
    """A mask that shows 8 of 11 digits leaves 1,000 candidates; at least 5 hidden leaves 100,000."""
    digits = "".join(str(i % 10) for i in range(length))
    masked = mask_phone(digits)
    hidden = masked.count("*")
    shown = len(masked) - hidden
    assert hidden >= 5 or masked == "***"
    assert shown <= max(0, length - 5)
    if masked != "***":
        assert len(masked) == length
        assert digits.startswith(masked[: masked.index("*")])
        assert digits.endswith(masked[masked.rindex("*") + 1 :])


def test_to_ascii_digits():
    assert to_ascii_digits("۰۱۲۳۴۵۶۷۸۹ ٠١٢٣٤٥٦٧٨٩ +98") == "0123456789 0123456789 +98"


@pytest.mark.parametrize(
    ("value", "bitel", "ippanel"),
    [
        ("+98 912 123 4567", "09121234567", "+989121234567"),
        ("۰۹۳۵۱۲۳۴۵۶۷", "09351234567", "+989351234567"),
        (9901234567, "09901234567", "+989901234567"),
    ],
)
def test_each_hook_puts_numbers_in_its_own_wire_format(value, bitel, ippanel):
    assert BitelHook("unused").normalize_number(value) == bitel
    assert IPPanelHook("unused").normalize_number(value) == ippanel


def test_hooks_refuse_invalid_numbers_with_the_masked_value():
    with pytest.raises(InvalidPhoneNumber, match=r"^0211\*\*\*\*\*78: is a landline"):
        BitelHook("unused").normalize_number("02112345678")


@pytest.mark.parametrize(
    ("sender", "normalized"),
    [
        ("+983000505", "+983000505"),
        ("983000505", "+983000505"),
        ("00983000505", "+983000505"),
        ("3000505", "+983000505"),
        ("03000505", "+983000505"),
        ("+98 300-0505", "+983000505"),
        ("۳۰۰۰۵۰۵", "+983000505"),
        ("+٩٨٣٠٠٠٥٠٥", "+983000505"),
        ("+9810001234", "+9810001234"),
    ],
)
def test_ippanel_sender_normalization(sender, normalized):
    assert IPPanelHook("unused").normalize_sender(sender) == normalized


def test_bitel_sender_keeps_its_digits_in_ascii():
    assert BitelHook("unused").normalize_sender("۱۰۰۰۹۹۰۹") == "10009909"
    assert BitelHook("unused").normalize_sender("10009909") == "10009909"
