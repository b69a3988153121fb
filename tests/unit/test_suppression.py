"""The suppression list: spellings, both gateways' wire formats, unreadable entries, and its memory."""

from __future__ import annotations

import tracemalloc

import pytest

from airflow_provider_p2psms.campaign.recipients import MessageBuilder, compile_template
from airflow_provider_p2psms.campaign.suppression import Suppression, load_suppression
from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.utils.phone import to_national_mobile


def _builder(suppression: Suppression | None = None, footer: str | None = None, max_parts: int = 8) -> MessageBuilder:
    return MessageBuilder(
        template=compile_template("Hi {{ row.name }}"),
        context={},
        normalize=lambda value: "+98" + to_national_mobile(value),
        phone_field="phone",
        max_parts=max_parts,
        fail_on_invalid=False,
        suppression=suppression,
        footer=footer,
    )


def test_every_spelling_of_a_number_is_one_entry_and_matches_both_wire_formats() -> None:
    suppression = Suppression()
    suppression.add(["09121234567", "+98 912 123 4567", "۰۹۱۲۱۲۳۴۵۶۷", 9121234567, "0098-912-123-4567"])
    assert len(suppression) == 1 and suppression.entries == 5 and suppression.unreadable == 0
    assert suppression.covers("+989121234567") and suppression.covers("09121234567")
    assert not suppression.covers("09121234568")


def test_unreadable_entries_are_counted_and_shown_masked() -> None:
    suppression = Suppression()
    suppression.add(["02112345678", "hello", None, "09121234567"])
    assert suppression.unreadable == 3 and len(suppression) == 1
    line = suppression.describe()
    assert "3 entries are not mobile numbers" in line
    assert "02112345678" not in line and "landline" in line


def test_listed_numbers_rows_and_rendered_strings() -> None:
    as_rows = load_suppression(
        exclude=[{"phone": "09121234567"}], exclude_sql=None, exclude_conn_id=None, phone_field="phone", fetch_size=10
    )
    rendered = load_suppression(
        exclude='["09121234567", "09351234567"]',
        exclude_sql=None,
        exclude_conn_id=None,
        phone_field="phone",
        fetch_size=10,
    )
    one = load_suppression(
        exclude="09121234567", exclude_sql=None, exclude_conn_id=None, phone_field="phone", fetch_size=10
    )
    assert as_rows is not None and len(as_rows) == 1
    assert rendered is not None and len(rendered) == 2
    assert one is not None and len(one) == 1
    assert load_suppression(exclude=None, exclude_sql=None, exclude_conn_id=None, phone_field="p", fetch_size=1) is None


def test_bad_lists_name_the_argument_and_the_entry() -> None:
    with pytest.raises(SmsInputError, match="exclude must be a list"):
        load_suppression(exclude={"a": 1}, exclude_sql=None, exclude_conn_id=None, phone_field="phone", fetch_size=1)
    with pytest.raises(SmsInputError, match="exclude entry 2 is a row without the field 'phone'"):
        load_suppression(
            exclude=[{"phone": "09121234567"}, {"mobile": "x"}],
            exclude_sql=None,
            exclude_conn_id=None,
            phone_field="phone",
            fetch_size=1,
        )
    with pytest.raises(SmsConfigurationError, match="exclude_conn_id"):
        load_suppression(exclude=None, exclude_sql="SELECT 1", exclude_conn_id=None, phone_field="p", fetch_size=1)


def test_a_million_numbers_cost_well_under_16_bytes_each() -> None:
    count = 200_000
    tracemalloc.start()
    try:
        suppression = Suppression()
        suppression.add(f"09{120000000 + 7 * i:09d}" for i in range(count))
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(suppression) == count
    assert size / count < 16, f"{size / count:.1f} bytes a number"


def test_suppressed_rows_are_excluded_not_invalid_and_the_footer_is_its_own_line() -> None:
    suppression = Suppression()
    suppression.add(["09121234567"])
    builder = _builder(suppression, footer=" لغو۱۱ ")
    rows = [{"phone": "09121234567", "name": "a"}, {"phone": "09351234567", "name": "b"}, {"phone": "x", "name": "c"}]
    built = [message for _, message in builder.build(rows)]
    assert [message.recipient for message in built] == ["+989351234567"]
    assert built[0].text == "Hi b\nلغو۱۱"
    assert (builder.excluded, builder.invalid, builder.requested) == (1, 1, 3)


def test_the_footer_is_counted_in_the_parts() -> None:
    builder = _builder(footer="لغو۱۱", max_parts=1)
    rows = [{"phone": "09121234567", "name": "ب" * 65}]
    assert list(builder.build(rows)) == []
    assert builder.invalid == 1 and "needs 2 SMS parts" in builder.problems[0]
