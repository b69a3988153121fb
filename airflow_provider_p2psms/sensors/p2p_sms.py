"""Wait until the messages of a send receipt are delivered."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_p2psms.version_compat import conf

if TYPE_CHECKING:
    from airflow.sdk import Context, PokeReturnValue

    from airflow_provider_p2psms.campaign.stores import KeyValueStore
    from airflow_provider_p2psms.campaign.tracking import DeliveryTracker
    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import DeliveryReport, SendReceipt

_STATE_KEY = "p2psms.delivery"


class P2PSmsDeliverySensor(BaseSensorOperator):
    """
    Poll delivery states until every message of a send receipt is final.

    Succeeds when all messages are final and the delivered share is at least
    ``min_delivered_ratio``, returning a delivery report through XCom; fails, naming the counts per
    status and the masked numbers that did not get their text, when all are final and the share is
    lower. Messages already final are never polled again, and the oldest pending message is probed
    before everything pending is polled. ``timeout``, ``soft_fail``, ``poke_interval`` and ``mode``
    behave as for every sensor.

    :param receipt: the send receipt, usually ``send.output`` of a ``P2PSmsOperator``. (templated)
    :param sms_conn_id: the SMS connection; default: the one the receipt names. (templated)
    :param min_delivered_ratio: the delivered share, from 0 to 1, that counts as success; default 1.0.
    :param deferrable: wait in the triggerer instead of a worker slot; default
        ``[operators] default_deferrable``.
    :param checkpoint_path: where rescheduled pokes keep what they learnt (see ``P2PSmsOperator``).
    """

    template_fields: Sequence[str] = ("receipt", "sms_conn_id")
    template_fields_renderers = {"receipt": "json"}  # noqa: RUF012 - Airflow's own convention
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        receipt: Any,
        sms_conn_id: str | None = None,
        min_delivered_ratio: float = 1.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        checkpoint_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= float(min_delivered_ratio) <= 1.0:
            from airflow_provider_p2psms.exceptions import SmsConfigurationError

            raise SmsConfigurationError(
                f"P2PSmsDeliverySensor '{kwargs.get('task_id')}': min_delivered_ratio must be between 0 and 1, "
                f"not {min_delivered_ratio!r}."
            )
        self.receipt = receipt
        self.sms_conn_id = sms_conn_id
        self.min_delivered_ratio = float(min_delivered_ratio)
        self.deferrable = deferrable
        self.checkpoint_path = checkpoint_path
        self._tracker: DeliveryTracker | None = None
        self._hook: P2PSmsHook | None = None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_provider_p2psms.triggers.p2p_sms import P2PSmsDeliveryTrigger

        receipt = self._read_receipt()
        if not receipt["messages"]:
            return self._finish(self._new_tracker(receipt), receipt)
        self.defer(
            trigger=P2PSmsDeliveryTrigger(
                sms_conn_id=self._conn_id(receipt),
                messages=receipt["messages"],
                poke_interval=self._interval_seconds(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any]) -> DeliveryReport:
        from airflow_provider_p2psms.campaign.tracking import DeliveryTracker
        from airflow_provider_p2psms.exceptions import P2PSmsError

        receipt = self._read_receipt()
        if event.get("status") != "done":
            raise P2PSmsError(f"Tracking delivery failed: {event.get('message', event)}")
        tracker = DeliveryTracker(receipt["messages"], state=event["state"], polls=int(event.get("polls", 0)))
        return self._finish(tracker, receipt)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow.sdk import PokeReturnValue

        receipt = self._read_receipt()
        store = self._store(context)
        tracker = self._tracker or self._load_tracker(receipt, store)
        if self._hook is None:
            from airflow_provider_p2psms.hooks.factory import get_sms_hook

            self._hook = get_sms_hook(self._conn_id(receipt))
        from airflow_provider_p2psms.exceptions import SmsGatewayUnavailable

        try:
            tracker.poll(self._hook)
        except SmsGatewayUnavailable as error:
            # An outage of the status API says nothing about delivery: the sensor's timeout bounds it.
            self.log.warning("Could not read delivery states this time; trying again next poke. %s", error)
        self.log.info("Delivery so far: %s.", tracker.summary())
        if store is not None:
            store.set(_STATE_KEY, {"state": tracker.state(), "polls": tracker.polls})
        else:
            self._tracker = tracker
        if not tracker.all_final:
            return False
        report = self._finish(tracker, receipt)
        if store is not None:
            store.delete(_STATE_KEY)
        return PokeReturnValue(is_done=True, xcom_value=report)

    # ------------------------------------------------------------------ helpers

    def _read_receipt(self) -> SendReceipt:
        from airflow_provider_p2psms.campaign.recipients import parse_rendered
        from airflow_provider_p2psms.exceptions import SmsInputError

        receipt = parse_rendered(self.receipt, "receipt") if isinstance(self.receipt, str) else self.receipt
        if not isinstance(receipt, Mapping) or not isinstance(receipt.get("messages"), str | list):
            raise SmsInputError(
                "receipt must be the send receipt of a P2PSmsOperator (a dict with 'messages'), e.g. "
                f"receipt=send.output; got {type(receipt).__name__}."
            )
        return receipt  # type: ignore[return-value]

    def _conn_id(self, receipt: SendReceipt) -> str:
        return self.sms_conn_id or receipt["sms_conn_id"]

    def _interval_seconds(self) -> float:
        interval = self.poke_interval
        return interval.total_seconds() if isinstance(interval, timedelta) else float(interval)

    def _store(self, context: Context) -> KeyValueStore | None:
        """Rescheduled pokes run in fresh processes: they keep what they learnt in the checkpoint store."""
        if self.mode != "reschedule":
            return None
        from airflow_provider_p2psms.campaign.stores import checkpoint_store

        return checkpoint_store(context, self.checkpoint_path)

    def _new_tracker(self, receipt: SendReceipt) -> DeliveryTracker:
        from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

        return DeliveryTracker(receipt["messages"])

    def _load_tracker(self, receipt: SendReceipt, store: KeyValueStore | None) -> DeliveryTracker:
        from airflow_provider_p2psms.campaign.tracking import DeliveryTracker

        saved = store.get(_STATE_KEY) if store is not None else None
        tracker = self._new_tracker(receipt)
        if isinstance(saved, dict) and len(saved.get("state", "")) == len(tracker.messages):
            return DeliveryTracker(tracker.messages, state=saved["state"], polls=int(saved.get("polls", 0)))
        return tracker

    def _finish(self, tracker: DeliveryTracker, receipt: SendReceipt) -> DeliveryReport:
        report = tracker.report(receipt.get("provider", ""), self._conn_id(receipt))
        ratio = report["delivered_ratio"]
        uncertain = receipt.get("counts", {}).get("uncertain", 0)
        if uncertain:
            self.log.warning("%d messages of this send are uncertain and are not tracked.", uncertain)
        if ratio + 1e-9 < self.min_delivered_ratio:
            from airflow_provider_p2psms.exceptions import SmsDeliveryFailed

            failed = tracker.failed_numbers()
            raise SmsDeliveryFailed(
                f"Delivery below target: {ratio:.1%} delivered, min_delivered_ratio is "
                f"{self.min_delivered_ratio:.1%}. {tracker.summary()}. Not delivered: {', '.join(failed)}"
                + (" (first 20)." if len(failed) >= 20 else ".")
            )
        self.log.info("All messages final: %s (%.1f%% delivered).", tracker.summary(), ratio * 100)
        return report
