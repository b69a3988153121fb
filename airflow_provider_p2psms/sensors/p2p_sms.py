"""Wait until the messages of a send receipt are delivered, and end with a delivery report whatever happens."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator

from airflow_provider_p2psms.utils.rendered import PersonalDataFields
from airflow_provider_p2psms.version_compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context, PokeReturnValue

    from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes
    from airflow_provider_p2psms.campaign.stores import KeyValueStore
    from airflow_provider_p2psms.campaign.tracking import DeliveryTarget, DeliveryTracker, TrackerSnapshot
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import DeliveryReport, SendReceipt
    from airflow_provider_p2psms.sensors.progress import Progress

#: The deferred wait ends this long before Airflow's own deferral timeout (at most), so the sensor can
#: still write its report; a tenth of ``timeout`` when that is shorter.
_TIMEOUT_MARGIN_SECONDS = 5.0


class P2PSmsDeliverySensor(PersonalDataFields, BaseSensorOperator):
    """
    Poll delivery states until the wait for a send receipt's messages ends, and report on it.

    The delivered ratio is delivered / attempted, where attempted counts the receipt's messages and
    those uncertain or rejected at send (not invalid or duplicate rows). The sensor succeeds when every
    message is final, or ``give_up_after`` has passed, and the ratio is at least ``min_delivered_ratio``;
    it fails as soon as the ratio can no longer reach it (``fail_early``), or at the end of the wait.
    A send that attempted nothing passes. Whatever the ending (success, failure, give-up, Airflow's
    ``timeout``, a ``soft_fail`` skip), the delivery report is the task's ``return_value`` XCom.

    Messages already final are never polled again; while nothing moves, a few probes spread over the
    receipt are polled instead of everything pending. ``timeout``, ``soft_fail``, ``poke_interval`` and
    ``mode`` behave as for every sensor.

    With an outcomes table (set here, else the one the receipt names), the send's rows get each status as
    a poll changes it, and at the end of the wait, but for an error, the messages still not final get the
    reason (:mod:`~airflow_provider_p2psms.campaign.delivery_outcomes`). In deferrable mode the trigger
    writes the changes and the end itself, in a thread of the triggerer (which needs the database driver).

    :param receipt: the send receipt, usually ``send.output`` of a ``P2PSmsOperator``. (templated)
    :param sms_conn_id: the SMS connection; default: the one the receipt names. (templated)
    :param min_delivered_ratio: the delivered ratio, from 0 to 1, that counts as success; default 1.0.
    :param give_up_after: seconds (or a ``timedelta``) from the first poke of the try after which messages
        not final count as not delivered and the sensor ends; shorter than ``timeout``; default unset.
    :param fail_early: fail as soon as the target can no longer be met, instead of waiting for every
        message or the deadline; default True.
    :param deferrable: wait in the triggerer instead of a worker slot; default
        ``[operators] default_deferrable``.
    :param checkpoint_path: where rescheduled pokes keep what they learnt (see ``P2PSmsOperator``).
    :param outcomes_conn_id: the SQL connection of the outcomes table to update; default: the receipt's
        (the send's ``outcomes_conn_id``), none if it has none. (templated)
    :param outcomes_table: that table; default: the receipt's, else ``p2psms_outcomes``. (templated)
    """

    template_fields: Sequence[str] = ("receipt", "sms_conn_id", "outcomes_conn_id", "outcomes_table")
    # The receipt lists every recipient: the task reads it, the UI's rendered fields show only its size.
    personal_fields: ClassVar[tuple[str, ...]] = ("receipt",)
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        receipt: Any,
        sms_conn_id: str | None = None,
        min_delivered_ratio: float = 1.0,
        give_up_after: float | timedelta | None = None,
        fail_early: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        checkpoint_path: str | None = None,
        outcomes_conn_id: str | None = None,
        outcomes_table: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_provider_p2psms.exceptions import SmsConfigurationError

        if not 0.0 <= float(min_delivered_ratio) <= 1.0:
            raise SmsConfigurationError(
                f"P2PSmsDeliverySensor '{self.task_id}': min_delivered_ratio must be between 0 and 1, "
                f"not {min_delivered_ratio!r}."
            )
        seconds = give_up_after.total_seconds() if isinstance(give_up_after, timedelta) else give_up_after
        if seconds is not None and not 0 < float(seconds) < self.timeout:
            raise SmsConfigurationError(
                f"P2PSmsDeliverySensor '{self.task_id}': give_up_after ({float(seconds):g} s) must be more than 0 "
                f"and shorter than timeout ({self.timeout:g} s), so that the sensor gives up, and reports, before "
                "Airflow times it out. Shorten give_up_after or lengthen timeout."
            )
        self.receipt = receipt
        self.sms_conn_id = sms_conn_id
        self.min_delivered_ratio = float(min_delivered_ratio)
        self.give_up_after = None if seconds is None else float(seconds)
        self.fail_early = fail_early
        self.deferrable = deferrable
        self.checkpoint_path = checkpoint_path
        self.outcomes_conn_id = outcomes_conn_id
        self.outcomes_table = outcomes_table
        self._outcomes: tuple[DeliveryOutcomes | None] | None = None  # None until resolved
        self._progress: Progress | None = None
        self._checkpoints: KeyValueStore | None = None
        self._hook: P2PSmsHook | None = None
        self._reported = False

    def execute(self, context: Context) -> Any:
        from airflow_provider_p2psms.campaign.tracking import TIMEOUT
        from airflow_provider_p2psms.exceptions import SmsInputError
        from airflow_provider_p2psms.version_compat import AirflowSensorTimeout, AirflowSkipException

        # Before the first poke: a set-up error fails the task before any polling, soft_fail or not.
        with contextlib.suppress(SmsInputError):  # a receipt that is not one fails the first poke, as ever
            self._outcomes_of(self._read_receipt())
        if self.deferrable:
            return self._defer(context)
        if self.reschedule:
            # A store other workers cannot read is such an error.
            self._checkpoint_store(context)
        try:
            return super().execute(context)
        except (AirflowSensorTimeout, AirflowSkipException) as error:
            # Airflow's own timeout (a skip without a cause, with soft_fail) is raised after a poke that
            # did not end the wait: report what that poke knew. Endings of a poke report themselves.
            timed_out = isinstance(error, AirflowSensorTimeout) or error.__cause__ is None
            if timed_out and not self._reported and self._progress is not None:
                receipt = self._read_receipt()
                self._push(context, self._report(self._progress.tracker, receipt, TIMEOUT))
                self._write_end(self._progress.tracker, receipt, TIMEOUT)
                self._forget(context)
                self._release(context, receipt, done=True)
            raise

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.sdk import PokeReturnValue

        from airflow_provider_p2psms.campaign.tracking import ERROR, UNREACHABLE
        from airflow_provider_p2psms.exceptions import SmsGatewayUnavailable

        receipt = self._read_receipt()
        target = self._target(receipt)
        progress = self._load_progress(context, receipt)
        tracker = progress.tracker
        deadline_passed = progress.deadline is not None and time.time() >= progress.deadline
        try:
            if tracker.pending_count:
                hook = self._get_hook(receipt)
                tracker.poll(hook, everything=deadline_passed)
                if not deadline_passed and target.ending(tracker) == UNREACHABLE:
                    # Before failing, read everything pending once: the report is then up to date.
                    tracker.poll(hook, everything=True)
        except SmsGatewayUnavailable as error:
            # An outage of the status API says nothing about delivery: the deadlines bound it.
            self.log.warning("Could not read delivery states this time; trying again next poke. %s", error)
        except Exception:
            self._push(context, self._report(tracker, receipt, ERROR))
            raise
        self._write_changes(context, tracker, receipt)
        self.log.info("Delivery so far: %s.", tracker.summary())
        ending = target.ending(tracker, deadline_passed=deadline_passed)
        if ending is None:
            self._save_progress(context, progress)
            return False
        self._forget(context)
        return PokeReturnValue(is_done=True, xcom_value=self._end(context, tracker, receipt, ending))

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> DeliveryReport:
        from airflow_provider_p2psms.campaign.tracking import ALL_FINAL, ERROR, TIMEOUT, TrackerSnapshot
        from airflow_provider_p2psms.exceptions import P2PSmsError
        from airflow_provider_p2psms.version_compat import AirflowSensorTimeout

        receipt = self._read_receipt()
        # The trigger wrote every status, and the reasons of an ending, to the outcomes table; the event
        # carries totals and a sample, never a row per message.
        snapshot = TrackerSnapshot.from_event(event)
        if event.get("status") != "done":
            self._push(context, self._report(snapshot, receipt, ERROR))
            raise P2PSmsError(f"Tracking delivery failed: {event.get('message', event)}")
        ending = str(event.get("ending") or ALL_FINAL)
        if ending == TIMEOUT:
            self._push(context, self._report(snapshot, receipt, TIMEOUT))
            self._release(context, receipt, done=True)
            raise AirflowSensorTimeout(
                f"Sensor has timed out: its timeout of {self.timeout:g} s passed with {snapshot.pending_count} of "
                f"{snapshot.total} messages not final. {snapshot.summary()}."
            )
        return self._end(context, snapshot, receipt, ending)

    # ------------------------------------------------------------------ helpers

    def _defer(self, context: Context) -> Any:
        from airflow_provider_p2psms.campaign.detail import is_ref
        from airflow_provider_p2psms.campaign.tracking import ALL_FINAL
        from airflow_provider_p2psms.triggers.p2p_sms import P2PSmsDeliveryTrigger

        receipt = self._read_receipt()
        target = self._target(receipt)
        if not is_ref(receipt["messages"]):
            tracker = self._new_tracker(receipt)
            if not tracker.total:
                return self._end(context, tracker, receipt, target.ending(tracker) or ALL_FINAL)
        outcomes = self._outcomes_of(receipt)
        started = time.time()
        margin = min(_TIMEOUT_MARGIN_SECONDS, self.timeout / 10)
        if self.give_up_after is not None:
            margin = min(margin, (self.timeout - self.give_up_after) / 2)
        self.defer(
            trigger=P2PSmsDeliveryTrigger(
                sms_conn_id=self._conn_id(receipt),
                messages=receipt["messages"],
                expected_messages=int(receipt["counts"]["sent"]) if is_ref(receipt["messages"]) else None,
                poke_interval=self.poke_interval,
                min_delivered_ratio=target.min_delivered_ratio,
                uncertain=target.uncertain,
                rejected=target.rejected,
                fail_early=target.fail_early,
                give_up_at=None if self.give_up_after is None else started + self.give_up_after,
                timeout_at=started + self.timeout - margin,
                outcomes_conn_id=None if outcomes is None else outcomes.conn_id,
                outcomes_table=None if outcomes is None else outcomes.table,
                send_task=None if outcomes is None else outcomes.task_fields(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def _read_receipt(self) -> SendReceipt:
        from airflow_provider_p2psms.campaign.recipients import parse_rendered
        from airflow_provider_p2psms.exceptions import SmsInputError

        value = self.personal_value("receipt")
        receipt = parse_rendered(value, "receipt") if isinstance(value, str) else value
        if not isinstance(receipt, Mapping) or not isinstance(receipt.get("messages"), str | list):
            raise SmsInputError(
                "receipt must be the send receipt of a P2PSmsOperator (a dict with 'messages'), e.g. "
                f"receipt=send.output; got {type(receipt).__name__}."
            )
        return receipt  # type: ignore[return-value]

    def _conn_id(self, receipt: SendReceipt) -> str:
        return self.sms_conn_id or receipt["sms_conn_id"]

    def _get_hook(self, receipt: SendReceipt) -> P2PSmsHook:
        if self._hook is None:
            from airflow_provider_p2psms.hooks.factory import get_sms_hook

            self._hook = get_sms_hook(self._conn_id(receipt))
        return self._hook

    def _target(self, receipt: SendReceipt) -> DeliveryTarget:
        from airflow_provider_p2psms.campaign.tracking import DeliveryTarget

        return DeliveryTarget.of_receipt(receipt, self.min_delivered_ratio, self.fail_early)

    def _checkpoint_store(self, context: Context) -> KeyValueStore | None:
        """Rescheduled pokes run in fresh processes: they keep what they learnt in the checkpoint store."""
        if not self.reschedule:
            return None
        if self._checkpoints is None:
            from airflow_provider_p2psms.campaign.stores import checkpoint_store

            self._checkpoints = checkpoint_store(context, self.checkpoint_path)
        return self._checkpoints

    def _new_tracker(self, receipt: SendReceipt) -> DeliveryTracker:
        from airflow_provider_p2psms.campaign.receipt_detail import load_tracker

        outcomes = self._outcomes_of(receipt)
        return load_tracker(receipt, outcomes, record_changes=outcomes is not None)

    def _outcomes_of(self, receipt: SendReceipt) -> DeliveryOutcomes | None:
        """The outcomes table to update: the sensor's own, else the one the receipt names; or None."""
        if self._outcomes is None:
            from airflow_provider_p2psms.campaign.delivery_outcomes import DeliveryOutcomes

            who = f"P2PSmsDeliverySensor '{self.task_id}'"
            self._outcomes = (DeliveryOutcomes.resolve(receipt, self.outcomes_conn_id, self.outcomes_table, who),)
        return self._outcomes[0]

    def _write_changes(self, context: Context, tracker: DeliveryTracker, receipt: SendReceipt) -> None:
        """Write the statuses this poll changed; a table that cannot take them ends the wait as an error."""
        outcomes = self._outcomes_of(receipt)
        if outcomes is not None:
            try:
                outcomes.write_changes(tracker, self.log)
            except Exception:
                from airflow_provider_p2psms.campaign.tracking import ERROR

                self._push(context, self._report(tracker, receipt, ERROR))
                raise

    def _write_end(self, tracker: DeliveryTracker | TrackerSnapshot, receipt: SendReceipt, ending: str) -> None:
        from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

        outcomes = self._outcomes_of(receipt)
        if outcomes is not None and isinstance(tracker, DeliveryTracker):  # the trigger writes its own
            outcomes.write_end(tracker, ending, self.log)

    def _release(self, context: Context, receipt: SendReceipt, *, done: bool) -> None:
        """Remove the receipt's detail file once this wait is over for good (``[p2psms] detail_retention``)."""
        from airflow_provider_p2psms.campaign.detail import remove_detail, retention

        ti = context["ti"]
        last_try = int(getattr(ti, "try_number", 1) or 1) > int(getattr(ti, "max_tries", self.retries) or 0)
        if (done or last_try) and retention() == "after_sensor" and remove_detail(receipt["messages"]):
            self.log.info("Removed the receipt's detail file ([p2psms] detail_retention = after_sensor).")

    def _load_progress(self, context: Context, receipt: SendReceipt) -> Progress:
        """This try's progress: in memory between pokes, or in the checkpoint store between reschedules."""
        from airflow_provider_p2psms.sensors.progress import load_progress

        store = self._checkpoint_store(context)
        if store is None and self._progress is not None:
            return self._progress
        self._progress = load_progress(
            receipt,
            self._outcomes_of(receipt),
            store,
            give_up_after=self.give_up_after,
            try_number=getattr(context["ti"], "try_number", None),
            log=self.log,
        )
        return self._progress

    def _save_progress(self, context: Context, progress: Progress) -> None:
        store = self._checkpoint_store(context)
        if store is not None:
            from airflow_provider_p2psms.campaign.detail import detail_root
            from airflow_provider_p2psms.campaign.stores import task_folder
            from airflow_provider_p2psms.sensors.progress import save_progress

            ti = context["ti"]
            map_index = getattr(ti, "map_index", -1)
            save_progress(
                store,
                progress,
                self._read_receipt(),
                lambda: task_folder(detail_root(self.task_id), ti.dag_id, ti.run_id, ti.task_id, map_index),
            )

    def _forget(self, context: Context) -> None:
        store = self._checkpoint_store(context)
        if store is not None:
            from airflow_provider_p2psms.sensors.progress import forget_progress

            forget_progress(store)

    def _report(self, tracker: DeliveryTracker | TrackerSnapshot, receipt: SendReceipt, ending: str) -> DeliveryReport:
        report = self._target(receipt).report(tracker, receipt.get("provider", ""), self._conn_id(receipt), ending)
        outcomes = self._outcomes_of(receipt)
        report["outcomes"] = None if outcomes is None else {"conn_id": outcomes.conn_id, "table": outcomes.table}
        return report

    def _push(self, context: Context, report: DeliveryReport) -> None:
        """Make ``report`` the task's return value now, for endings that raise."""
        if self.do_xcom_push:
            context["ti"].xcom_push(key="return_value", value=report)
        self._reported = True

    def _end(
        self, context: Context, tracker: DeliveryTracker | TrackerSnapshot, receipt: SendReceipt, ending: str
    ) -> DeliveryReport:
        """The report of a wait that ended, returned on success; pushed, then raised as a failure, if not."""
        from airflow_provider_p2psms.campaign.tracking import ALL_FINAL, GAVE_UP, NOTHING_ATTEMPTED

        target = self._target(receipt)
        report = self._report(tracker, receipt, ending)
        self._write_end(tracker, receipt, ending)
        if ending == NOTHING_ATTEMPTED:
            self.log.info("The send attempted no message (every row was invalid or a duplicate): nothing to wait for.")
            self._release(context, receipt, done=True)
            return report
        ratio = report["delivered_ratio"] or 0.0
        if ending == ALL_FINAL:
            why = "every message is final"
        elif ending == GAVE_UP:
            why = (
                f"gave up after give_up_after={self.give_up_after:g} s, with {tracker.pending_count} not final "
                "counted as not delivered"
            )
        else:
            why = f"at most {target.best_ratio(tracker):.1%} can still be delivered, so it fails early (fail_early)"
        details = f"{tracker.summary()}."
        if target.uncertain or target.rejected:
            details += (
                f" Of {target.attempted(tracker)} attempted, {target.uncertain} were uncertain and {target.rejected} "
                "rejected at send: not delivered."
            )
        if target.met(tracker):
            self.log.info(
                "Delivered %.1f%%, min_delivered_ratio is %.1f%% (%s). %s",
                ratio * 100,
                self.min_delivered_ratio * 100,
                why,
                details,
            )
            self._release(context, receipt, done=True)
            return report
        from airflow_provider_p2psms.exceptions import SmsDeliveryFailed

        self._push(context, report)
        self._release(context, receipt, done=False)
        failed = tracker.failed_numbers()
        if failed:
            details += f" Not delivered: {', '.join(failed)}" + (" (first 20)." if len(failed) >= 20 else ".")
        raise SmsDeliveryFailed(
            f"Delivery below target: {ratio:.1%} delivered, min_delivered_ratio is {self.min_delivered_ratio:.1%} "
            f"({why}). {details}"
        )
