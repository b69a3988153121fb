"""The sandbox's IPPanel price and credit endpoints: what they answer, and what they refuse."""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.sandbox import DEFAULT_IPPANEL_KEY, DEFAULT_IPPANEL_SENDER, SandboxConfig
from airflow_provider_p2psms.sandbox.ippanel_account import MCI_PRICE_PER_PART, OTHER_PRICE_PER_PART

AUTH = {"Authorization": DEFAULT_IPPANEL_KEY}


def test_prices_follow_the_parts_of_the_text(sandbox, session):
    for text, parts in (("Hello", 1), ("س" * 71, 2), ("a" * 307, 3)):
        answer = session.post(
            f"{sandbox.ippanel_url}/api/send/calculate-price",
            json={"number": DEFAULT_IPPANEL_SENDER, "message": text},
            headers=AUTH,
        )
        assert answer.status_code == 200
        assert answer.json()["data"] == {
            "mci_price": MCI_PRICE_PER_PART * parts,
            "other_price": OTHER_PRICE_PER_PART * parts,
            "parts": parts,
        }
        assert answer.json()["meta"]["message_code"] == "200-1"
    assert (MCI_PRICE_PER_PART, OTHER_PRICE_PER_PART) == (2370.0, 2503.0)  # the Edge documentation's example
    assert sandbox.messages() == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"message": "Hi"}, ["number"]),
        ({"number": "+989121234567", "message": "Hi"}, ["number"]),  # a recipient is not a sender line
        ({"number": DEFAULT_IPPANEL_SENDER, "message": "  "}, ["message"]),
        ({"number": DEFAULT_IPPANEL_SENDER}, ["message"]),
        ([1, 2], ["body"]),
    ],
)
def test_a_bad_price_request_is_a_422_naming_the_field(sandbox, session, body, fields):
    answer = session.post(f"{sandbox.ippanel_url}/api/send/calculate-price", json=body, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["meta"]["message_code"] == "400-2"
    assert list(answer.json()["meta"]["errors"]) == fields


def test_a_price_request_needs_the_key(sandbox, session):
    answer = session.post(
        f"{sandbox.ippanel_url}/api/send/calculate-price",
        json={"number": DEFAULT_IPPANEL_SENDER, "message": "Hi"},
        headers={"Authorization": "nope"},
    )
    assert answer.status_code == 401


def test_the_credit_is_configurable(sandbox, session):
    url = f"{sandbox.ippanel_url}/api/payment/credit/mine"
    assert session.get(url, headers=AUTH).json()["data"] == {"credit": 1000000.0}
    changed = session.post(f"{sandbox.url}/__sandbox__/config", json={"ippanel_credit": 2500}).json()
    assert changed["ippanel_credit"] == 2500.0
    assert session.get(url, headers=AUTH).json()["data"] == {"credit": 2500.0}
    with pytest.raises(ValueError, match="ippanel_credit must be >= 0"):
        SandboxConfig(ippanel_credit=-1)
