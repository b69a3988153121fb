"""Quiet hours with a frozen clock: is a moment inside the window, and when does it open next."""

from __future__ import annotations

import pendulum
import pytest

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.utils.window import SendWindow

TEHRAN = "Asia/Tehran"


def at(text: str) -> pendulum.DateTime:
    return pendulum.parse(text, tz=TEHRAN)


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        ("2026-03-20T07:59:59", "2026-03-20T08:00:00"),
        ("2026-03-20T08:00:00", None),
        ("2026-03-20T14:30:00", None),
        ("2026-03-20T20:59:59", None),
        ("2026-03-20T21:00:00", "2026-03-21T08:00:00"),
        ("2026-03-20T23:45:00", "2026-03-21T08:00:00"),
        ("2026-03-20T00:10:00", "2026-03-20T08:00:00"),
    ],
)
def test_day_window(now, opens):
    window = SendWindow.parse(("08:00", "21:00"), TEHRAN)
    found = window.next_opening(at(now))
    if opens is None:
        assert found is None
    else:
        assert found == at(opens)
        assert found.timezone_name == "UTC"


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        ("2026-03-20T22:00:00", True),
        ("2026-03-20T05:59:00", True),
        ("2026-03-20T06:00:00", False),
        ("2026-03-20T12:00:00", False),
    ],
)
def test_window_spanning_midnight(now, inside):
    window = SendWindow.parse(("21:30", "06:00"), TEHRAN)
    assert window.contains(at(now)) is inside
    if not inside:
        assert window.next_opening(at(now)) == at("2026-03-20T21:30:00")


def test_window_is_judged_in_its_own_timezone_whatever_the_clock_says():
    window = SendWindow.parse(("08:00", "21:00"), TEHRAN)
    utc_evening = pendulum.datetime(2026, 3, 20, 18, 0, tz="UTC")  # 21:30 in Tehran
    assert window.next_opening(utc_evening) == at("2026-03-21T08:00:00")
    assert window.contains(pendulum.datetime(2026, 3, 20, 5, 0, tz="UTC"))  # 08:30 in Tehran


@pytest.mark.parametrize(
    ("window", "timezone", "message"),
    [
        (("8", "21:00"), TEHRAN, "'8' is not a time of day"),
        ("08:00-21:00", TEHRAN, "must be a pair of times"),
        (("08:00",), TEHRAN, "must be a pair of times"),
        (("09:00", "09:00"), TEHRAN, "opens and closes at the same time"),
        (("08:00", "21:00"), "Mars/Olympus", "'Mars/Olympus' is not a known IANA timezone"),
    ],
)
def test_bad_windows_are_refused_clearly(window, timezone, message):
    with pytest.raises(SmsConfigurationError, match=message):
        SendWindow.parse(window, timezone)


def test_operator_refuses_a_bad_window_when_the_dag_is_parsed():
    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator

    with pytest.raises(SmsConfigurationError, match="send_window time '25:00' is not a time of day"):
        P2PSmsOperator(task_id="t", sms_conn_id="x", recipients=[], message="hi", send_window=("08:00", "25:00"))


@pytest.mark.parametrize(
    ("window", "now", "closes"),
    [
        (("08:00", "21:00"), "2026-03-20T08:00:00", "2026-03-20T21:00:00"),
        (("08:00", "21:00"), "2026-03-20T20:59:59", "2026-03-20T21:00:00"),
        (("08:00", "21:00"), "2026-03-20T21:00:00", None),
        (("08:00", "21:00"), "2026-03-20T07:00:00", None),
        (("22:00", "06:00"), "2026-03-20T23:00:00", "2026-03-21T06:00:00"),
        (("22:00", "06:00"), "2026-03-20T01:00:00", "2026-03-20T06:00:00"),
        (("22:00", "06:00"), "2026-03-20T12:00:00", None),
    ],
)
def test_next_closing(window, now, closes):
    found = SendWindow.parse(window, TEHRAN).next_closing(at(now))
    if closes is None:
        assert found is None
    else:
        assert found == at(closes)
        assert found.timezone_name == "UTC"
