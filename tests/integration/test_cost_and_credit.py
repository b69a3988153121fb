"""check_credit and max_cost on a real Airflow: the estimate before the first send, refusals, the dry run's estimate."""

from __future__ import annotations

import json

import pytest

from airflow_provider_p2psms.sandbox.ippanel_account import MCI_PRICE_PER_PART, OTHER_PRICE_PER_PART
from airflow_provider_p2psms.utils.text import count_sms_parts
from tests.helpers import connection_env

pytestmark = pytest.mark.integration

ONE_PART = "Nowruz sale: 20% off"
TWO_PARTS_FA = "سلام، حراج نوروزی امسال از فردا شروع می‌شود و تا پایان فروردین ادامه دارد. منتظر شما هستیم!"
TWO_PARTS_EN = (
    "Dear customer, " + "our spring sale starts tomorrow and lasts until the end of the month. " * 3
).strip()
# (number, text, network the number's range belongs to): MCI 0912/0919, Irancell 0935/0939.
CAMPAIGN = [
    ("0912 123 4567", ONE_PART, "mci"),
    ("+989191234567", TWO_PARTS_FA, "mci"),
    ("09351234567", ONE_PART, "other"),
    ("۰۹۳۹۱۲۳۴۵۶۷", TWO_PARTS_FA, "other"),
    ("09351112233", TWO_PARTS_EN, "other"),
]
ROWS = [{"phone": phone, "text": text} for phone, text, _ in CAMPAIGN]
PRICE = {"mci": MCI_PRICE_PER_PART, "other": OTHER_PRICE_PER_PART}


def expected_estimate(credit: float | None) -> dict[str, object]:
    """What the sandbox's prices make of CAMPAIGN, worked out here independently of the provider."""
    by_parts: dict[str, dict[str, float]] = {}
    for _, text, network in CAMPAIGN:
        parts = count_sms_parts(text)
        entry = by_parts.setdefault(
            str(parts),
            {
                "messages": 0,
                "mci_price": MCI_PRICE_PER_PART * parts,
                "other_price": OTHER_PRICE_PER_PART * parts,
                "cost": 0.0,
            },
        )
        entry["messages"] += 1
        entry["cost"] += PRICE[network] * parts
    return {
        "cost": sum(entry["cost"] for entry in by_parts.values()),
        "by_parts": by_parts,
        "networks": {"mci": 2, "other": 3, "unknown": 0},
        "credit": credit,
    }


ESTIMATE = expected_estimate(1000000.0)
COST = ESTIMATE["cost"]
assert sorted(ESTIMATE["by_parts"]) == ["1", "2"] and COST == 2370 + 2503 + 2 * 2370 + 2 * 2 * 2503


def money(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def send_requests(sandbox) -> list[dict[str, object]]:
    return [r for r in sandbox.requests() if r["kind"] == "send"]


def test_credit_and_max_cost_refuse_before_anything_is_sent(run_dag, sandbox):
    sandbox.configure(ippanel_credit=10000)
    result = run_dag(
        f"""
        rows = {ROWS!r}
        P2PSmsOperator(
            task_id="low_credit",
            sms_conn_id="ippanel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            check_credit="{{{{ params.check }}}}",
        )
        P2PSmsOperator(
            task_id="over_budget",
            sms_conn_id="ippanel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            max_cost="{{{{ params.budget }}}}",
        )
        """,
        connection_env(sandbox),
        dag_kwargs=", params={'check': True, 'budget': 15000}",
    )
    assert result.state("low_credit") == "failed"
    assert result.state("over_budget") == "failed"
    # Proven by what the gateway received: prices and the credit were asked, nothing was sent.
    assert send_requests(sandbox) == [] and sandbox.messages() == []
    paths = [r["path"] for r in sandbox.requests()]
    assert paths.count("/v1/api/send/calculate-price") == 4  # one per parts count, per task
    assert paths.count("/v1/api/payment/credit/mine") == 1  # max_cost alone reads no credit
    assert f"the estimated cost {money(COST)} is more than the credit 10,000" in result.output
    assert "(check_credit=True): top the account up" in result.output
    assert f"the estimated cost {money(COST)} is more than max_cost 15,000: raise max_cost" in result.output
    assert "Nothing was sent" in result.output
    assert "networks: 2 mci, 3 other, 0 unknown" in result.output
    assert "+989121234567" not in result.output and "+989351234567" not in result.output


def test_a_campaign_within_both_limits_sends_and_its_dry_run_shows_the_same_estimate(run_dag, sandbox):
    result = run_dag(
        f"""
        rows = {ROWS!r}
        dry = P2PSmsOperator(
            task_id="dry",
            sms_conn_id="ippanel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            dry_run=True,
        )
        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="ippanel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            check_credit=True,
            max_cost={COST!r},
        )
        dry >> send
        """,
        connection_env(sandbox),
    )
    assert result.returncode == 0, result.output[-3000:]
    dry = result.xcom("dry")
    assert dry["estimate"] == ESTIMATE
    assert dry["counts"]["dry_run"] == 5 and dry["counts"]["sent"] == 0

    sent = result.xcom("send")
    assert sent["counts"]["sent"] == 5
    assert sent["estimate"] == ESTIMATE  # the estimate equals max_cost: not more, so it is sent
    assert sorted(m["text"] for m in sandbox.messages()) == sorted(text for _, text, _ in CAMPAIGN)
    # Every price and credit look-up came before the first send request.
    kinds = [r["kind"] for r in sandbox.requests()]
    first_send = kinds.index("send")
    assert "account" not in kinds[first_send:]
    assert [json.loads(r["body"])["number"] for r in sandbox.requests() if r["kind"] == "account" and r["body"]] == [
        "+983000505"
    ] * 4


def test_bitel_refuses_the_limits_at_the_start_and_its_dry_run_has_no_estimate(run_dag, sandbox):
    result = run_dag(
        f"""
        rows = {ROWS!r}
        P2PSmsOperator(
            task_id="check_credit",
            sms_conn_id="bitel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            check_credit=True,
        )
        P2PSmsOperator(
            task_id="max_cost",
            sms_conn_id="bitel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            max_cost=100000,
        )
        P2PSmsOperator(
            task_id="dry",
            sms_conn_id="bitel_default",
            recipients=rows,
            message="{{{{ row.text }}}}",
            dry_run=True,
        )
        """,
        connection_env(sandbox),
    )
    assert result.state("check_credit") == "failed"
    assert result.state("max_cost") == "failed"
    assert result.state("dry") == "success"
    assert sandbox.requests() == []  # no estimate was guessed, nothing was sent
    assert result.output.count("Bitel documents no price or credit endpoint") >= 2
    assert "Leave check_credit and max_cost unset, or send through an IPPanel connection." in result.output
    assert "SmsConfigurationError" in result.output
    dry = result.xcom("dry")
    assert dry["estimate"] is None and dry["counts"]["dry_run"] == 5
