"""The cost estimate: networks from carrier metadata, the tally, its pricing and the limits that refuse a campaign."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_p2psms.campaign.estimate import (
    CostCheck,
    CostLimits,
    CostTally,
    describe,
    enforce,
    estimate_cost,
    priced_dry_run,
)
from airflow_provider_p2psms.exceptions import InvalidPhoneNumber, SmsConfigurationError
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.models import OutgoingSms, PriceQuote, message_key
from airflow_provider_p2psms.operators.options import cost_problems, max_cost_value
from airflow_provider_p2psms.utils.carrier import network_of
from airflow_provider_p2psms.utils.text import count_sms_parts, stand_in_text

LOG = logging.getLogger("test_estimate")
ONE_PART = "Hello"
TWO_PARTS = "x" * 200  # GSM-7: more than 160 characters
THREE_PARTS_FA = "سلام " * 30  # UCS-2: 150 characters, 3 parts of 67


@pytest.mark.parametrize(
    ("number", "network"),
    [
        ("09121234567", "mci"),
        ("+989191234567", "mci"),
        ("۰۹۹۰۱۲۳۴۵۶۷", "mci"),
        ("0935 123 4567", "other"),
        ("09391234567", "other"),
        ("09201234567", "other"),  # Rightel
        ("09951012345", "unknown"),  # a valid mobile range the carrier metadata names no network for
    ],
)
def test_network_from_carrier_metadata(number, network):
    assert network_of(number) == network


def test_the_network_cache_tells_neighbouring_ranges_apart():
    # 0995 1... has no carrier, 0995 5... is Irancell: the cache key must be long enough to keep them apart.
    assert [network_of(n) for n in ("09951012345", "09955012345", "09951099999")] == ["unknown", "other", "unknown"]


def test_a_number_that_is_not_a_mobile_is_refused():
    with pytest.raises(InvalidPhoneNumber):
        network_of("02112345678")


class QuotingHook:
    """A hook's price and credit interface with fixed prices, counting the calls."""

    provider_name = "Gateway"
    supports_price_quote = True
    supports_credit = True

    def __init__(self, mci_per_part: float = 2370.0, other_per_part: float = 2503.0, balance: float = 1e6) -> None:
        self.mci_per_part, self.other_per_part, self.balance = mci_per_part, other_per_part, balance
        self.quoted: list[str] = []
        self.credit_reads = 0

    def price_quote(self, text: str) -> PriceQuote:
        from airflow_provider_p2psms.utils.text import count_sms_parts

        self.quoted.append(text)
        parts = count_sms_parts(text)
        return PriceQuote(parts, self.mci_per_part * parts, self.other_per_part * parts)

    def credit(self) -> float:
        self.credit_reads += 1
        return self.balance

    def cost_unsupported(self, what: str) -> SmsConfigurationError:
        raise AssertionError("not expected")


def messages(*pairs: tuple[str, str]) -> list[tuple[int, OutgoingSms]]:
    from airflow_provider_p2psms.utils.text import count_sms_parts

    built = [
        OutgoingSms(f"+98{number[1:]}", text, row, None, count_sms_parts(text))
        for row, (number, text) in enumerate(pairs, 1)
    ]
    return [(message_key(m.recipient, m.text), m) for m in built]


CAMPAIGN = messages(
    ("09121234567", ONE_PART),
    ("09191234567", TWO_PARTS),
    ("09351234567", ONE_PART),
    ("09391234567", TWO_PARTS),
    ("09351112233", TWO_PARTS + "!"),
    ("09951012345", THREE_PARTS_FA),
)
# 1 part: MCI + other; 2 parts: MCI + 2 other; 3 parts: one unknown, at the higher (other) price.
EXPECTED_COST = (2370 + 2503) + (2 * 2370 + 2 * 2 * 2503) + 3 * 2503


def test_the_tally_counts_per_parts_and_network_and_keeps_one_text_per_parts_count():
    tally = CostTally()
    for _, message in CAMPAIGN:
        tally.add(message)
    assert dict(tally.counts) == {(1, "mci"): 1, (1, "other"): 1, (2, "mci"): 1, (2, "other"): 2, (3, "unknown"): 1}
    # Stand-ins billed like the first text of each parts count, with none of its words.
    assert tally.samples == {
        part: stand_in_text(text) for part, text in ((1, ONE_PART), (2, TWO_PARTS), (3, THREE_PARTS_FA))
    }
    assert all(count_sms_parts(text) == part for part, text in tally.samples.items())
    assert tally.networks() == {"mci": 2, "other": 3, "unknown": 1}
    assert tally.messages == 6


def test_the_tally_stays_a_few_counters_however_many_messages():
    tally = CostTally()
    for n in range(20_000):
        tally.add(OutgoingSms(f"+98912{n:07d}", ONE_PART if n % 2 else TWO_PARTS))
    assert tally.messages == 20_000
    assert len(tally.counts) == 2 and len(tally.samples) == 2


def test_the_estimate_asks_one_price_per_parts_count_and_prices_unknown_networks_high():
    hook = QuotingHook()
    tally = CostTally()
    for _, message in CAMPAIGN:
        tally.add(message)

    estimate = estimate_cost(hook, tally, credit=True)

    assert hook.quoted == [stand_in_text(text) for text in (ONE_PART, TWO_PARTS, THREE_PARTS_FA)]
    assert estimate["cost"] == EXPECTED_COST
    assert estimate["by_parts"] == {
        "1": {"messages": 2, "mci_price": 2370.0, "other_price": 2503.0, "cost": 2370.0 + 2503.0},
        "2": {"messages": 3, "mci_price": 4740.0, "other_price": 5006.0, "cost": 4740.0 + 2 * 5006.0},
        "3": {"messages": 1, "mci_price": 7110.0, "other_price": 7509.0, "cost": 7509.0},
    }
    assert estimate["networks"] == {"mci": 2, "other": 3, "unknown": 1}
    assert estimate["credit"] == 1e6 and hook.credit_reads == 1
    # The higher price wins for an unknown network, whichever network it is.
    cheap_other = estimate_cost(QuotingHook(mci_per_part=3000.0, other_per_part=1000.0), tally, credit=False)
    assert cheap_other["by_parts"]["3"]["cost"] == 9000.0
    assert cheap_other["credit"] is None


def test_an_empty_campaign_costs_nothing_and_asks_no_price():
    hook = QuotingHook()
    estimate = estimate_cost(hook, CostTally(), credit=False)
    assert estimate == {"cost": 0.0, "by_parts": {}, "networks": {"mci": 0, "other": 0, "unknown": 0}, "credit": None}
    assert hook.quoted == []


def test_limits_refuse_naming_the_estimate_and_the_balance():
    estimate = {
        "cost": 1234567.0,
        "by_parts": {"1": {"messages": 500, "mci_price": 2370.0, "other_price": 2503.0, "cost": 1234567.0}},
        "networks": {"mci": 300, "other": 200, "unknown": 0},
        "credit": 1000000.0,
    }
    with pytest.raises(SmsConfigurationError) as credit_error:
        enforce(estimate, CostLimits(check_credit=True), provider="IPPanel", sms_conn_id="ippanel_default")
    text = str(credit_error.value)
    assert "Nothing was sent" in text
    assert "the estimated cost 1,234,567 is more than the credit 1,000,000" in text
    assert "connection 'ippanel_default'" in text and "top the account up" in text
    assert "500 of 1 part at 2,370 (MCI) / 2,503 (other)" in text

    with pytest.raises(SmsConfigurationError, match=r"more than max_cost 1,000,000\.5: raise max_cost"):
        enforce(estimate, CostLimits(max_cost=1000000.5), provider="IPPanel", sms_conn_id="c")

    enforce(estimate, CostLimits(max_cost=1234567.0), provider="IPPanel", sms_conn_id="c")
    enforce({**estimate, "credit": 1234567.0}, CostLimits(check_credit=True), provider="IPPanel", sms_conn_id="c")
    enforce(estimate, CostLimits(), provider="IPPanel", sms_conn_id="c")


def test_describe_never_shows_an_exponent():
    estimate = {"cost": 12345678.25, "by_parts": {}, "networks": {"mci": 0, "other": 0, "unknown": 0}, "credit": 1e7}
    assert describe(estimate).startswith("Estimated cost 12,345,678.25 (no messages;")
    assert describe(estimate).endswith("; credit 10,000,000")


def test_a_gateway_without_price_endpoint_refuses_the_limits_naming_itself():
    hook = BitelHook("bitel_default")
    CostLimits().require(hook)  # no limit, nothing to refuse
    for limits in (CostLimits(check_credit=True), CostLimits(max_cost=1000.0)):
        with pytest.raises(SmsConfigurationError) as error:
            limits.require(hook)
        assert "Bitel documents no price or credit endpoint" in str(error.value)
        assert "connection 'bitel_default'" in str(error.value)
    with pytest.raises(SmsConfigurationError, match="Bitel documents no price or credit endpoint"):
        hook.price_quote("Hello")
    with pytest.raises(SmsConfigurationError, match="Bitel documents no price or credit endpoint"):
        hook.credit()
    CostLimits(check_credit=True, max_cost=1.0).require(IPPanelHook("ippanel_default"))


def test_the_cost_check_reads_every_message_before_handing_out_the_first():
    read: list[int] = []

    def source():
        for key, message in CAMPAIGN:
            read.append(message.row)
            yield key, message

    hook = QuotingHook(balance=EXPECTED_COST)
    check = CostCheck(hook, CostLimits(check_credit=True, max_cost=EXPECTED_COST), "c", LOG)
    passed = check.checked(source())
    assert read == [1, 2, 3, 4, 5, 6]  # all read, priced and checked before the first message is handed out
    assert check.estimate is not None and check.estimate["cost"] == EXPECTED_COST
    assert list(passed) == CAMPAIGN


def test_the_cost_check_refuses_before_handing_out_anything():
    hook = QuotingHook(balance=EXPECTED_COST - 1)
    check = CostCheck(hook, CostLimits(check_credit=True), "c", LOG)
    with pytest.raises(SmsConfigurationError, match="is more than the credit"):
        check.checked(iter(CAMPAIGN))
    assert check.estimate is not None and check.estimate["credit"] == EXPECTED_COST - 1

    only_max = CostCheck(QuotingHook(), CostLimits(max_cost=100.0), "c", LOG)
    with pytest.raises(SmsConfigurationError, match="more than max_cost 100"):
        only_max.checked(iter(CAMPAIGN))
    assert only_max.estimate is not None and only_max.estimate["credit"] is None  # max_cost alone reads no credit


def test_a_dry_run_reads_the_credit_and_fails_where_its_send_would():
    hook = QuotingHook(balance=5.0)
    tally = CostTally()
    for _, message in CAMPAIGN:
        tally.add(message)
    assert priced_dry_run(hook, tally, CostLimits(), "c", LOG)["credit"] == 5.0
    with pytest.raises(SmsConfigurationError, match="more than the credit 5"):
        priced_dry_run(hook, tally, CostLimits(check_credit=True), "c", LOG)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (500000, 500000.0),
        (0.5, 0.5),
        ("250000", 250000.0),
        (" 1e5 ", 100000.0),
        ("", None),
        ("None", None),
    ],
)
def test_max_cost_as_rendered(value, expected):
    assert max_cost_value(value) == expected


@pytest.mark.parametrize("value", [0, -1, True, "lots", "nan", "inf", [1]])
def test_max_cost_refuses_what_is_not_a_positive_number(value):
    with pytest.raises(SmsConfigurationError, match="max_cost must be a positive number"):
        max_cost_value(value)


def test_operator_argument_checks_for_the_cost_limits():
    problems: list[str] = []
    assert cost_problems(problems, check_credit="{{ params.check }}", max_cost="{{ params.budget }}") == (
        "{{ params.check }}"
    )
    assert cost_problems(problems, check_credit="yes", max_cost=1000) is True
    assert problems == []
    cost_problems(problems, check_credit="maybe", max_cost=-5)
    assert len(problems) == 2
    assert (
        problems[0].startswith("max_cost must be a positive number")
        and "check_credit must be true or false" in problems[1]
    )
