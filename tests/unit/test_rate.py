"""The send rate: slots over messages, halving on a 429, climbing back after a quiet spell, on a clock of our own."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from airflow_provider_p2psms.campaign.rate import (
    MIN_RATE,
    QUIET_SECONDS,
    SendRate,
    SlowDown,
    SlowDownWatch,
    paced_batch_size,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, template: str, *args: Any) -> None:
        self.lines.append(("info", template % args))

    def warning(self, template: str, *args: Any) -> None:
        self.lines.append(("warning", template % args))


def make_rate(max_rate: float, **kwargs: Any) -> tuple[SendRate, Clock, Log]:
    clock, log = Clock(), Log()
    return SendRate(max_rate, log=log, gateway="Bitel", clock=clock, **kwargs), clock, log


def test_batch_size_is_at_most_max_rate():
    assert paced_batch_size(100, None) == 100
    assert paced_batch_size(100, 50) == 50
    assert paced_batch_size(100, 250.5) == 100
    assert paced_batch_size(100, 7.9) == 7
    assert paced_batch_size(100, 0.5) == 1


def test_slots_are_one_batch_apart_and_a_pause_is_not_saved_up():
    rate, clock, _ = make_rate(50)
    first, second, third = rate.reserve(50), rate.reserve(50), rate.reserve(25)
    assert [slot.at - clock.now for slot in (first, second, third)] == [0.0, 1.0, 2.0]
    assert rate.delay() == pytest.approx(2.5)
    clock.advance(10)  # idle: the next batch goes now, and the one after it a batch later, not at once
    assert rate.delay() == 0.0
    after_pause = [rate.reserve(50).at - clock.now for _ in range(3)]
    assert after_pause == [0.0, 1.0, 2.0]
    assert [slot.number for slot in (first, second, third)] == [0, 1, 2]


def test_no_five_second_span_gets_more_than_five_seconds_of_messages_and_a_busy_sender_gets_them_all():
    rate, clock, _ = make_rate(40)
    batch, sent = 40, []
    for step in range(400):
        clock.advance(3.0 if step == 150 else 0.03)  # a sender that looks every 30 ms, and pauses once
        if rate.delay() == 0:
            sent.append(rate.reserve(batch).at)
    for start in sent:
        assert sum(batch for at in sent if start <= at < start + 5) <= 40 * 5
    after_pause = [at for at in sent if at > sent[0] + 150 * 0.03]
    assert after_pause[1] - after_pause[0] == pytest.approx(1.0, abs=0.031)  # no burst after the pause
    span = after_pause[-1] - after_pause[0]
    assert (len(after_pause) - 1) * batch / span >= 0.95 * 40


def test_a_429_halves_the_rate_once_per_burst_and_logs_the_change_once():
    rate, _, log = make_rate(80)
    slots = [rate.reserve(10) for _ in range(4)]  # four batches in flight at 80/s
    assert all(rate.slow_down(slot, None) for slot in slots)  # the whole burst answered 429
    assert rate.rate == 40
    assert log.lines == [
        ("warning", "Bitel answered 429 (too many requests): slowing down from 80 to 40 messages/s (max_rate 80).")
    ]
    later = rate.reserve(10)  # sent at 40/s, still too fast
    rate.slow_down(later, None)
    assert rate.rate == 20
    assert len(log.lines) == 2


def test_retry_after_holds_every_slot_back():
    rate, clock, _ = make_rate(100)
    slot = rate.reserve(10)
    rate.slow_down(slot, retry_after=3.0)
    assert rate.delay() == pytest.approx(3.0)
    assert rate.reserve(10).at == pytest.approx(clock.now + 3.0)


def test_the_rate_never_goes_below_one_message_a_second_nor_below_nor_above_max_rate():
    rate, _, _ = make_rate(10)
    for _ in range(10):
        rate.slow_down(rate.reserve(1), None)
    assert rate.rate == MIN_RATE
    slow, _, _ = make_rate(0.5)
    slow.slow_down(slow.reserve(1), None)
    assert slow.rate == 0.5


def test_the_rate_climbs_back_a_tenth_of_max_rate_per_quiet_spell_up_to_max_rate():
    rate, clock, log = make_rate(100)
    rate.slow_down(rate.reserve(10), None)
    rate.slow_down(rate.reserve(10), None)
    assert rate.rate == 25
    clock.advance(QUIET_SECONDS - 0.1)
    rate.reserve(10)
    assert rate.rate == 25  # not quiet long enough
    seen = []
    for _ in range(12):
        clock.advance(QUIET_SECONDS)
        rate.delay()
        rate.delay()  # asking twice in a quiet spell climbs once
        seen.append(rate.rate)
    assert seen[:8] == pytest.approx([35, 45, 55, 65, 75, 85, 95, 100])
    assert seen[8:] == [100] * 4
    climbs = [line for level, line in log.lines if level == "info"]
    assert len(climbs) == 8
    assert climbs[0] == "No 429 for 5 s: speeding up from 25 to 35 messages/s (max_rate 100)."
    assert climbs[-1].startswith("No 429 for 5 s: speeding up from 95 to 100 ")


def test_a_429_restarts_the_quiet_spell():
    rate, clock, _ = make_rate(100)
    early = rate.reserve(10)
    rate.slow_down(rate.reserve(10), None)
    clock.advance(QUIET_SECONDS - 1)
    rate.slow_down(early, None)  # an older batch's 429: no cut, but not quiet either
    assert rate.rate == 50
    clock.advance(QUIET_SECONDS - 1)
    rate.delay()
    assert rate.rate == 50
    clock.advance(1)
    rate.delay()
    assert rate.rate == 60


def test_the_lowest_rate_refused_more_than_patience_times_in_a_row_gives_up():
    rate, _, _ = make_rate(2, patience=2)
    assert rate.slow_down(rate.reserve(1), None)  # 2 -> 1
    assert rate.slow_down(rate.reserve(1), None)  # at the floor: 1st strike
    rate.accepted()  # a batch got through: the count starts again
    assert rate.slow_down(rate.reserve(1), None)
    assert rate.slow_down(rate.reserve(1), None)
    assert not rate.slow_down(rate.reserve(1), None)


def test_max_rate_must_be_positive():
    with pytest.raises(ValueError, match="more than 0"):
        SendRate(0, log=Log())


def _answer(status: int, retry_after: str | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b'{"result": null, "error": "TooManyRequests"}'
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


class _Hook:
    """Calls the session's response hooks with a canned answer, as ``requests`` does for each response."""

    def __init__(self, session: requests.Session, answer: requests.Response) -> None:
        self.session, self.answer = session, answer

    def send_batch(self, messages: Any, **options: Any) -> list[Any]:
        for callback in self.session.hooks["response"]:
            callback(self.answer)
        return []


def test_the_watch_raises_only_for_a_429_to_a_first_attempt_on_a_sending_thread():
    session = requests.Session()
    watch = SlowDownWatch()
    assert watch.attach(session)
    with pytest.raises(SlowDown) as raised:
        watch.send(_Hook(session, _answer(429, "2.5")), [], after_uncertain=False)
    assert raised.value.retry_after == 2.5
    # After an uncertain attempt a 429 may be the duplicate guard: left to the transport.
    assert watch.send(_Hook(session, _answer(429)), [], after_uncertain=True) == []
    assert watch.send(_Hook(session, _answer(503)), [], after_uncertain=False) == []
    # A read on another thread, or on this one outside a send, is not watched.
    outside: list[BaseException] = []

    def read_elsewhere() -> None:
        try:
            _Hook(session, _answer(429)).send_batch([])
        except BaseException as error:
            outside.append(error)

    thread = threading.Thread(target=read_elsewhere)
    thread.start()
    thread.join()
    read_elsewhere()
    assert outside == []
    watch.detach()
    assert session.hooks["response"] == []
    assert not SlowDownWatch().attach(object())


@pytest.mark.parametrize("value", [50, "12.5", 0.5])
def test_the_connection_extra_max_rate_is_read_as_messages_a_second(monkeypatch, value):
    from airflow_provider_p2psms.hooks.bitel import BitelHook
    from tests.hooks import use_connection

    use_connection(monkeypatch, "sms_rate", "bitel", password="token", host=None, max_rate=value)
    settings = BitelHook("sms_rate").settings
    assert settings.max_rate == float(value)
    assert f"max_rate={float(value)}" in repr(settings)
    use_connection(monkeypatch, "sms_rate", "bitel", password="token", host=None)
    assert BitelHook("sms_rate").settings.max_rate is None


@pytest.mark.parametrize("value", [0, -5, "fast", True, "inf"])
def test_a_connection_extra_max_rate_that_is_not_a_positive_number_names_the_connection(monkeypatch, value):
    from airflow_provider_p2psms.exceptions import SmsConfigurationError
    from airflow_provider_p2psms.hooks.bitel import BitelHook
    from tests.hooks import use_connection

    use_connection(monkeypatch, "sms_rate", "bitel", password="token", host=None, max_rate=value)
    with pytest.raises(SmsConfigurationError, match=r"Connection 'sms_rate': extra 'max_rate' is .*messages a second"):
        _ = BitelHook("sms_rate").settings


@pytest.mark.parametrize("value", [0, -1, True, "50", float("nan"), float("inf")])
def test_the_operator_refuses_a_max_rate_that_is_not_a_positive_number(value):
    from airflow_provider_p2psms.exceptions import SmsConfigurationError
    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator

    with pytest.raises(SmsConfigurationError, match="max_rate must be a positive number of messages a second"):
        P2PSmsOperator(
            task_id="send", sms_conn_id="bitel_default", recipients=["09121234567"], message="hi", max_rate=value
        )
    assert (
        P2PSmsOperator(task_id="ok", sms_conn_id="bitel_default", recipients=[], message="hi", max_rate=2.5).max_rate
        == 2.5
    )
