"""The approval gate: the dry run's summary for its approver, and the send's check against the approved dry run."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from jinja2 import DictLoader
from jinja2.sandbox import SandboxedEnvironment

from airflow_provider_p2psms.campaign.approval import (
    approval_summary,
    approved_receipt,
    check_approved,
    dry_run_preview,
    template_source,
)
from airflow_provider_p2psms.campaign.receipt import ReceiptBuilder
from airflow_provider_p2psms.campaign.recipients import MessageBuilder, compile_template
from airflow_provider_p2psms.exceptions import SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.operators.sending import _approval_check, read_every_row
from airflow_provider_p2psms.operators.steps import preview
from airflow_provider_p2psms.utils.phone import to_national_mobile

TEMPLATE = "سلام {{ row.name }}، کد {{ row.code }}. پشتیبانی: {{ row.support }}"
ROWS = [
    {"phone": "09121234567", "name": "Nazanin", "code": "A1", "support": "0912 765 4321"},
    {"phone": "09351234567", "name": "Reza", "code": "B2", "support": "0912 765 4321"},
    {"phone": "09131112233", "name": "Sara", "code": "C3", "support": "0912 765 4321"},
    {"phone": "09131112244", "name": "Omid", "code": "D4", "support": "0912 765 4321"},
    {"phone": "not a number", "name": "Bad", "code": "E5", "support": "-"},
    {"phone": "09121234567", "name": "Nazanin", "code": "A1", "support": "0912 765 4321"},
]


def builder() -> MessageBuilder:
    return MessageBuilder(
        template=compile_template(TEMPLATE),
        context={},
        normalize=to_national_mobile,
        phone_field="phone",
        max_parts=8,
        fail_on_invalid=False,
    )


@pytest.fixture
def dry_run_receipt():
    """A dry run's receipt, as the operator's dry run builds it from ROWS."""
    hook = SimpleNamespace(provider_name="Bitel", supports_price_quote=False)
    built = preview(
        hook, builder(), iter(ROWS), ReceiptBuilder("bitel", "bitel_default"), logging.getLogger(), template=TEMPLATE
    )
    return json.loads(json.dumps(built))  # as it comes back from XCom


def now(**changes):
    counts = {"requested": 6, "messages": 4, "invalid": 1, "duplicate": 1, "excluded": 0, "parts": 4}
    return {**counts, **changes}


# --- the dry run's summary ----------------------------------------------------------------------------------


def test_the_dry_run_receipt_carries_the_template_and_three_masked_samples(dry_run_receipt):
    assert dry_run_receipt["counts"]["dry_run"] == 4
    summary = dry_run_receipt["preview"]
    assert summary["template"] == TEMPLATE
    assert len(summary["samples"]) == 3
    assert summary["samples"][0] == "سلام Nazanin، کد A1. پشتیبانی: 0912*******21"
    assert summary["parts"] == 4  # four short Persian texts, one part each
    assert not any("765 4321" in text for text in summary["samples"])


def test_the_approval_summary_shows_the_counts_the_template_and_masked_samples_only(dry_run_receipt):
    dry_run_receipt["counts"]["excluded"] = 2
    dry_run_receipt["estimate"] = {"cost": 12345.5, "by_parts": {}, "networks": {}, "credit": None}
    text = approval_summary(dry_run_receipt)
    for line in (
        "- Rows read: 6",
        "- Messages to send: 4",
        "- Invalid rows: 1",
        "- Duplicate rows: 1",
        "- Excluded rows: 2",
        "- SMS parts: 4",
        "- Estimated cost: 12,345.5",
        TEMPLATE,
        "1. سلام Nazanin، کد A1. پشتیبانی: 0912*******21",
        "3. سلام Sara، کد C3. پشتیبانی: 0912*******21",
    ):
        assert line in text
    # No row value beyond the three masked samples: not the fourth row, not the invalid one, no number.
    for value in ("Omid", "Bad", "not a number", "0912 765 4321", "09121234567", "9121234567"):
        assert value not in text
    assert "2. " in text and "4. " not in text


def test_the_summary_reads_the_receipt_as_a_template_renders_it(dry_run_receipt):
    """``{{ ti.xcom_pull(...) }}`` without native rendering gives the receipt's Python literal."""
    assert approval_summary(str(dry_run_receipt)) == approval_summary(dry_run_receipt)
    assert approval_summary(json.dumps(dry_run_receipt)) == approval_summary(dry_run_receipt)


def test_a_template_with_backticks_stays_inside_its_code_block():
    receipt = {"counts": {"requested": 1, "dry_run": 1}, "preview": dry_run_preview("a ``` b", ["x"], 1)}
    assert "````\na ``` b\n````" in approval_summary(receipt)


def test_a_long_template_is_cut_in_the_receipt():
    assert len(dry_run_preview("x" * 5000, [], 0)["template"]) == 2000


def test_the_template_of_a_file_is_its_source():
    environment = SandboxedEnvironment(loader=DictLoader({"offer.j2": "Hi {{ row.name }}"}))
    assert template_source("offer.j2", environment) == "Hi {{ row.name }}"
    assert template_source("Hi {{ row.name }}", environment) == "Hi {{ row.name }}"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (None, "is empty"),
        ("None", "is empty"),
        ({"counts": {"dry_run": 1}}, "not the receipt of a dry run"),
        ({"counts": {"sent": 3, "dry_run": 0}, "preview": {}}, "receipt of a send"),
        ("[1, 2]", "not the receipt of a dry run"),
        ("{not json", "neither JSON nor a Python literal"),
    ],
)
def test_what_is_not_an_approved_dry_run_is_refused_with_the_way_to_pass_one(value, words):
    with pytest.raises(SmsInputError, match=words):
        approved_receipt(value)


# --- the send's check ---------------------------------------------------------------------------------------


def test_a_campaign_within_the_tolerance_passes(dry_run_receipt):
    check_approved(dry_run_receipt, now(), None, 0.05)
    check_approved(dry_run_receipt, now(), None, 0, sms_conn_id="bitel_default", template=TEMPLATE)
    # 5% of 6 rows is 0.3: no count may move by a whole row; 20% lets one row move.
    check_approved(dry_run_receipt, now(requested=7, invalid=2), None, 0.2)


def test_rows_added_after_the_approval_fail_naming_each_figure_that_moved(dry_run_receipt):
    with pytest.raises(SmsInputError) as raised:
        check_approved(dry_run_receipt, now(requested=9, messages=7, parts=7), None, 0.05)
    message = str(raised.value)
    assert "approval tolerance of 5%" in message
    assert "rows read 6 approved, 9 now (+3; at most ±0.3 allowed)" in message
    assert "messages to send 4 approved, 7 now (+3; at most ±0.3 allowed)" in message
    assert "SMS parts 4 approved, 7 now (+3; at most ±0.2 allowed)" in message
    assert "invalid rows" not in message  # unchanged figures are not named
    assert "Nothing was sent. Run the dry run again and approve its new summary" in message


def test_zero_tolerance_means_exactly_as_approved(dry_run_receipt):
    check_approved(dry_run_receipt, now(), None, 0)
    with pytest.raises(SmsInputError, match=r"duplicate rows 1 approved, 0 now \(-1; at most ±0 allowed\)"):
        check_approved(dry_run_receipt, now(duplicate=0), None, 0)


def test_the_estimate_is_compared_when_both_have_one(dry_run_receipt):
    dry_run_receipt["estimate"] = {"cost": 1000.0, "by_parts": {}, "networks": {}, "credit": None}
    check_approved(dry_run_receipt, now(), 1040.0, 0.05)
    check_approved(dry_run_receipt, now(), None, 0.05)  # the send made no estimate: not compared
    with pytest.raises(SmsInputError, match=r"estimated cost 1,000 approved, 1,100 now \(\+100; at most ±50 allowed\)"):
        check_approved(dry_run_receipt, now(), 1100.0, 0.05)


def test_another_connection_or_template_is_not_the_campaign_approved(dry_run_receipt):
    with pytest.raises(SmsInputError, match="through connection 'bitel_default', this send through 'ippanel_default'"):
        check_approved(dry_run_receipt, now(), None, 0.05, sms_conn_id="ippanel_default")
    with pytest.raises(SmsInputError, match="template is not the one approved"):
        check_approved(dry_run_receipt, now(), None, 0.05, template=TEMPLATE + "!")


# --- the send's pre-send pass -------------------------------------------------------------------------------


def test_the_pre_send_pass_reads_every_row_before_the_check_and_the_first_message():
    read: list[int] = []
    seen = []

    def rows():
        for number, row in enumerate(ROWS, start=1):
            read.append(number)
            yield row

    def check(counts, tally):
        seen.append((list(read), counts, tally.messages))

    rows_builder = builder()
    messages = read_every_row(rows_builder, rows_builder.build(rows()), check)
    counts = {"requested": 6, "messages": 4, "invalid": 1, "duplicate": 1, "excluded": 0, "parts": 4}
    assert seen == [([1, 2, 3, 4, 5, 6], counts, 4)]
    assert [message.recipient for _, message in messages] == ["9121234567", "9351234567", "9131112233", "9131112244"]


def test_a_failed_check_stops_the_pass_before_any_message():
    def refuse(counts, tally):
        raise SmsInputError("moved")

    rows_builder = builder()
    with pytest.raises(SmsInputError, match="moved"):
        read_every_row(rows_builder, rows_builder.build(iter(ROWS)), refuse)


def test_the_pre_send_pass_of_no_rows_yields_nothing():
    empty = builder()
    seen = []
    messages = read_every_row(empty, empty.build([]), lambda counts, tally: seen.append(counts["requested"]))
    assert seen == [0] and list(messages) == []


def test_the_send_prices_the_campaign_again_when_the_approver_saw_a_price(sms_connections):
    """IPPanel prices a text before sending: the dry run's estimate is compared with the send's, on the sandbox."""
    hook = get_sms_hook("ippanel_default")
    rows = [row for row in ROWS if row["name"] != "Bad"]
    approved = preview(
        hook,
        builder(),
        iter(rows),
        ReceiptBuilder("ippanel", "ippanel_default"),
        logging.getLogger(),
        template=TEMPLATE,
    )
    assert approved["estimate"] is not None and approved["estimate"]["cost"] > 0
    send = SimpleNamespace(approval_tolerance=0.05, sms_conn_id="ippanel_default", log=logging.getLogger())
    check = _approval_check(send, hook, approved, TEMPLATE, None)

    same = builder()
    assert len(list(read_every_row(same, same.build(iter(rows)), check))) == 4
    more = builder()
    added = [{**row, "phone": f"0912000{index:04d}"} for index, row in enumerate(rows * 2)]
    with pytest.raises(SmsInputError, match=r"estimated cost [\d,.]+ approved, [\d,.]+ now") as raised:
        read_every_row(more, more.build(iter(rows + added)), check)
    assert "messages to send 4 approved, 14 now" in str(raised.value)
    assert sms_connections.messages() == []  # priced, never sent


def test_with_cost_limits_the_approval_pass_prices_the_campaign_once_and_enforces_them(sms_connections):
    """approved_dry_run beside check_credit: one pass reads the rows and one quote per parts count prices them."""
    from airflow_provider_p2psms.campaign.estimate import CostCheck, CostLimits

    hook = get_sms_hook("ippanel_default")
    rows = [row for row in ROWS if row["name"] != "Bad"]
    approved = preview(
        hook,
        builder(),
        iter(rows),
        ReceiptBuilder("ippanel", "ippanel_default"),
        logging.getLogger(),
        template=TEMPLATE,
    )
    quotes_before = sum(1 for entry in sms_connections.requests() if entry["path"].endswith("/calculate-price"))
    send = SimpleNamespace(approval_tolerance=0.05, sms_conn_id="ippanel_default", log=logging.getLogger())
    cost_check = CostCheck(hook, CostLimits(True, None), "ippanel_default", logging.getLogger())
    check = _approval_check(send, hook, approved, TEMPLATE, None, cost_check)
    same = builder()
    assert len(list(read_every_row(same, same.build(iter(rows)), check))) == 4
    quotes = sum(1 for entry in sms_connections.requests() if entry["path"].endswith("/calculate-price"))
    assert quotes - quotes_before == len(approved["estimate"]["by_parts"])
    assert cost_check.estimate is not None and cost_check.estimate["cost"] == approved["estimate"]["cost"]
    assert cost_check.estimate["credit"] is not None  # check_credit read the balance in the same pass

    sms_connections.configure(ippanel_credit=1.0)
    poor = builder()
    with pytest.raises(SmsConfigurationError, match="is more than the credit"):
        read_every_row(poor, poor.build(iter(rows)), check)
    assert sms_connections.messages() == []


# --- the operator's arguments -------------------------------------------------------------------------------


def send_operator(**kwargs):
    return P2PSmsOperator(
        task_id="send", sms_conn_id="bitel_default", recipients=["09121234567"], message="x", **kwargs
    )


@pytest.mark.parametrize("tolerance", [-0.1, 1.5, "0.05", True, None])
def test_a_tolerance_that_is_not_a_fraction_is_refused(tolerance):
    with pytest.raises(SmsConfigurationError, match="approval_tolerance must be a fraction from 0"):
        send_operator(approval_tolerance=tolerance)


def test_an_approved_dry_run_given_as_plain_text_is_refused():
    with pytest.raises(SmsConfigurationError, match="approved_dry_run must be the approved dry run's receipt"):
        send_operator(approved_dry_run="dry_run")


def test_the_approval_arguments_and_their_defaults():
    operator = send_operator(approved_dry_run="{{ ti.xcom_pull(task_ids='dry_run') }}")
    assert operator.approval_tolerance == 0.05
    assert "approved_dry_run" in operator.template_fields
    assert send_operator(approval_tolerance=0).approval_tolerance == 0
