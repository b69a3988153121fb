"""DeliveryTracker and DeliveryTarget: what is polled, what the ratio is over, how a wait ends."""

from __future__ import annotations

import time

import pytest

from airflow_provider_p2psms.campaign.tracking import (
    ALL_FINAL,
    GAVE_UP,
    NOTHING_ATTEMPTED,
    UNREACHABLE,
    DeliveryTarget,
    DeliveryTracker,
    pack_state,
    unpack_state,
)
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import OutgoingSms
from tests.helpers import GATEWAYS

STUCK = "09121230009"


def tracker_with(state: str) -> DeliveryTracker:
    return DeliveryTracker(
        [[f"{index:032x}", f"0912{1000000 + index:07d}"] for index in range(len(state))], state=state
    )


def status_requests(sandbox) -> int:
    return sum(1 for entry in sandbox.requests() if entry["kind"] in ("status", "report"))


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize("stuck_at", [0, 4, 8])
def test_a_message_that_never_becomes_final_does_not_hide_the_others(sms_connections, gateway, stuck_at):
    """
    One number stays non-final for ever (first, in the middle or last of the receipt); the eight
    others become final half a second after acceptance. Within two polls after that, all eight are seen
    final, and while everything is pending a poll asks about a few probes only, not every message.
    """
    sms_connections.configure(delivery_seconds=0.5)
    numbers = [f"0935{2001000 + index:07d}" for index in range(8)]
    numbers.insert(stuck_at, STUCK)
    hook = get_sms_hook(f"{gateway}_default")
    receipts = hook.send_batch([OutgoingSms(hook.normalize_number(n), f"Hi {n}") for n in numbers])
    accepted = time.monotonic()
    tracker = DeliveryTracker([[r.message_id, r.recipient] for r in receipts])

    for _ in range(3):  # while every message is pending
        before = status_requests(sms_connections)
        tracker.poll(hook)
        assert status_requests(sms_connections) - before <= 3 * (2 if gateway == "ippanel" else 1)
    assert time.monotonic() - accepted < 0.5, "the machine is too slow for this test's timing"
    assert not any(status.is_final for status in tracker.statuses)

    time.sleep(max(0.0, accepted + 0.6 - time.monotonic()))
    for _ in range(2):
        tracker.poll(hook)
    others = [status.value for index, status in enumerate(tracker.statuses) if index != stuck_at]
    assert others == ["delivered"] * 8
    assert not tracker.statuses[stuck_at].is_final


def test_a_long_campaign_costs_about_one_status_request_per_message(sms_connections):
    """200 messages, final 0.4 s after acceptance, polled every 0.1 s: the probes cost a few requests only."""
    sms_connections.configure(delivery_seconds=0.4)
    hook = get_sms_hook("bitel_default")
    messages = []
    for start in range(0, 200, 100):
        batch = [OutgoingSms(f"0912{3001000 + index:07d}", "Hi") for index in range(start, start + 100)]
        messages += [[r.message_id, r.recipient] for r in hook.send_batch(batch)]
    tracker = DeliveryTracker(messages)
    while not tracker.all_final:
        tracker.poll(hook)
        time.sleep(0.1)
    assert status_requests(sms_connections) <= 1.2 * len(messages)


def test_a_full_poll_at_the_deadline_asks_about_everything_pending(sms_connections):
    sms_connections.configure(delivery_seconds=0.0)
    hook = get_sms_hook("bitel_default")
    receipts = hook.send_batch([OutgoingSms(f"0912{4001000 + index:07d}", "Hi") for index in range(10)])
    tracker = DeliveryTracker([[r.message_id, r.recipient] for r in receipts])
    tracker.poll(hook, everything=True)
    assert status_requests(sms_connections) == 10
    assert tracker.all_final


def test_the_state_of_a_big_campaign_is_kept_compressed():
    state = ("d" * 700 + "f" * 20 + "p" * 280) * 100
    packed = pack_state(state)
    assert packed.startswith("zlib:") and len(packed) < 1000
    assert unpack_state(packed) == state
    assert pack_state("dfp") == "dfp" == unpack_state("dfp")
    tracker = tracker_with(state)
    assert tracker.state() == packed
    assert DeliveryTracker(tracker.messages, state=packed).statuses == tracker.statuses


def test_the_ratio_is_over_accepted_uncertain_and_rejected_messages():
    tracker = tracker_with("dddf")
    target = DeliveryTarget(0.5, uncertain=2, rejected=2)
    assert target.attempted(tracker) == 8
    assert target.ratio(tracker) == 3 / 8
    assert target.ending(tracker) == ALL_FINAL
    assert not target.met(tracker)
    report = target.report(tracker, "bitel", "bitel_default", ALL_FINAL)
    assert {key: report[key] for key in ("attempted", "total", "final", "uncertain_at_send", "rejected_at_send")} == {
        "attempted": 8,
        "total": 4,
        "final": 4,
        "uncertain_at_send": 2,
        "rejected_at_send": 2,
    }
    assert report["delivered_ratio"] == 0.375
    assert report["ending"] == ALL_FINAL
    assert report["counts"]["delivered"] == 3


def test_nothing_confirmed_never_passes_a_target_above_zero():
    all_uncertain = DeliveryTracker("")
    assert not DeliveryTarget(0.9, uncertain=5).met(all_uncertain)
    assert not DeliveryTarget(0.01, rejected=1).met(all_uncertain)
    assert DeliveryTarget(0.0, uncertain=5).met(all_uncertain)
    assert DeliveryTarget(0.9, uncertain=5).ratio(all_uncertain) == 0.0


def test_nothing_attempted_passes_and_says_so():
    target = DeliveryTarget(1.0)
    nothing = DeliveryTracker("")
    assert target.ending(nothing) == NOTHING_ATTEMPTED
    assert target.met(nothing)
    report = target.report(nothing, "bitel", "bitel_default", NOTHING_ATTEMPTED)
    assert report["attempted"] == 0
    assert report["delivered_ratio"] is None


def test_fail_early_ends_as_soon_as_the_target_is_out_of_reach():
    tracker = tracker_with("dfpp")  # at best 3 of 4
    assert DeliveryTarget(0.8).ending(tracker) == UNREACHABLE
    assert DeliveryTarget(0.8, fail_early=False).ending(tracker) is None
    assert DeliveryTarget(0.75).ending(tracker) is None  # still reachable
    assert DeliveryTarget(0.75).ending(tracker, deadline_passed=True) == GAVE_UP


def test_there_is_no_early_success():
    tracker = tracker_with("ddddddddds")  # 90% delivered already, one not final
    target = DeliveryTarget(0.5)
    assert target.met(tracker)
    assert target.ending(tracker) is None  # waits for the last one, or the deadline
    assert target.ending(tracker, deadline_passed=True) == GAVE_UP


# --------------------------------------------------------------------------- parts and prices


def sent_for(hook, numbers: list[str], texts: list[str]) -> list[list[str]]:
    receipts = hook.send_batch(
        [OutgoingSms(hook.normalize_number(n), text) for n, text in zip(numbers, texts, strict=True)]
    )
    return [[r.message_id, r.recipient] for r in receipts]


#: Delivered in two parts, delivery failed, blacklisted, never final; the sandbox charges 150 a part for
#: what the operator took (delivered, delivery failed).
PRICED = ["09351234567", "09121230001", "09121230002", STUCK]
PRICED_TEXTS = ["س" * 100, "hi", "hi", "hi"]


def test_the_tracker_sums_the_parts_reported_and_the_final_prices_once(sms_connections):
    sms_connections.configure(delivery_seconds=3600)
    hook = get_sms_hook("bitel_default")
    tracker = DeliveryTracker(sent_for(hook, PRICED, PRICED_TEXTS))
    assert (tracker.total_parts, tracker.price) == (0, None)

    tracker.poll(hook, everything=True)
    assert (list(tracker.parts), tracker.total_parts, tracker.price) == ([2, 1, 1, 1], 5, None)

    sms_connections.configure(delivery_seconds=0)
    tracker.poll(hook, everything=True)
    assert [status.value for status in tracker.statuses] == ["delivered", "failed", "blacklisted", "sent"]
    assert (tracker.total_parts, tracker.price) == (5, 450.0)
    tracker.poll(hook, everything=True)  # only the one not final is asked about again: nothing counted twice
    assert (tracker.total_parts, tracker.price) == (5, 450.0)

    report = DeliveryTarget(0.5).report(tracker, "bitel", "bitel_default", GAVE_UP)
    assert (report["parts"], report["price"]) == (5, 450.0)

    # A rescheduled poke resumes them with the states.
    again = DeliveryTracker(tracker.messages, state=tracker.state(), parts=tracker.packed_parts(), price=tracker.price)
    assert (list(again.parts), again.total_parts, again.price) == ([2, 1, 1, 1], 5, 450.0)


def test_a_tracker_with_no_price_reported_says_none():
    tracker = tracker_with("ddp")
    report = DeliveryTarget(0.5).report(tracker, "ippanel", "ippanel_default", GAVE_UP)
    assert (report["parts"], report["price"]) == (0, None)
    assert tracker.packed_parts() == ""


def test_changes_are_recorded_once_per_status_and_only_when_asked(sms_connections):
    sms_connections.configure(delivery_seconds=3600)
    hook = get_sms_hook("bitel_default")
    messages = sent_for(hook, PRICED, PRICED_TEXTS)
    tracker = DeliveryTracker(messages, record_changes=True)
    tracker.poll(hook, everything=True)
    assert tracker.take_changes() == []  # still pending: nothing to write

    sms_connections.configure(delivery_seconds=0)
    tracker.poll(hook, everything=True)
    changes = tracker.take_changes()
    assert [(index, state.status.value, state.price) for index, state in changes] == [
        (0, "delivered", 300.0),
        (1, "failed", 150.0),
        (2, "blacklisted", 0.0),
        (3, "sent", None),
    ]
    assert tracker.take_changes() == []
    tracker.poll(hook, everything=True)  # the one never final reads "sent" again: no change
    assert tracker.take_changes() == []

    quiet = DeliveryTracker(messages)
    quiet.poll(hook, everything=True)
    assert quiet.take_changes() == []


def test_the_parts_of_a_big_campaign_are_kept_compressed():
    from array import array

    from airflow_provider_p2psms.campaign.tracking import pack_parts, unpack_parts

    parts = array("B", [1] * 70_000 + [2] * 30_000)
    packed = pack_parts(parts)
    assert len(packed) < 400
    assert unpack_parts(packed, len(parts)) == parts
    assert unpack_parts("", 3) == array("B", [0, 0, 0])
    with pytest.raises(ValueError, match="parts of 100000 messages cannot describe 5 messages"):
        unpack_parts(packed, 5)
