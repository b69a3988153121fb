"""Text people when a DAG or task succeeds or fails: an Airflow notifier over any SMS connection of ours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context


class P2PSmsNotifier(BaseNotifier):
    """
    Send one SMS, rendered from the Airflow context, to one or more numbers.

    Use it as a callback: ``on_failure_callback=P2PSmsNotifier(sms_conn_id="bitel_default",
    phone_numbers=["0912 123 4567"], message="{{ dag.dag_id }}.{{ ti.task_id }} failed ({{ ds }})")``.
    A callback must not break the task it reports on, so a number that is not a valid Iranian
    mobile is logged (masked) and left out, and a gateway error is logged, not raised; set
    ``raise_on_error=True`` to raise instead.

    :param sms_conn_id: connection of type ``bitel`` or ``ippanel``. (templated)
    :param phone_numbers: a number or a list of numbers, in any common spelling. (templated)
    :param message: the text, a Jinja template with the Airflow context (``dag``, ``ti``, ``ds``,
        ``exception``...). (templated)
    :param raise_on_error: raise on a gateway error or when no number is valid; default ``False``.
    :param max_parts: the most SMS parts the text may take (a long ``{{ exception }}`` would bill many):
        a longer text is cut to fit and ends with ``…``, and the log says so. Default 3.
    """

    template_fields: Sequence[str] = ("sms_conn_id", "phone_numbers", "message")

    def __init__(
        self,
        *,
        sms_conn_id: str,
        phone_numbers: str | Sequence[str],
        message: str,
        raise_on_error: bool = False,
        max_parts: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(max_parts, int) or isinstance(max_parts, bool) or max_parts < 1:
            from airflow_provider_p2psms.exceptions import SmsConfigurationError

            raise SmsConfigurationError(
                f"P2PSmsNotifier: max_parts must be a whole number of at least 1, not {max_parts!r}."
            )
        self.max_parts = max_parts
        self.sms_conn_id = sms_conn_id
        self.phone_numbers = phone_numbers
        self.message = message
        self.raise_on_error = raise_on_error

    def notify(self, context: Context) -> None:
        from airflow_provider_p2psms.exceptions import P2PSmsError

        try:
            self._deliver()
        except P2PSmsError as error:
            self._failed(error)

    async def async_notify(self, context: Context) -> None:
        """
        :meth:`notify` for the triggerer, where Airflow awaits notifiers (deadline alerts): same numbers,
        text, masking and errors.

        The gateway hooks send over their pooled ``requests`` session, with the send retry rules of
        :mod:`~airflow_provider_p2psms.hooks.transport`; the triggerer's async client only reads. So the send
        runs in a thread of the loop's default executor, as the delivery trigger's database writes do, and
        the event loop that every trigger of the triggerer shares only waits. The connection is read in
        that thread too, which reaches the triggerer's connections through the event loop.
        """
        from asgiref.sync import sync_to_async

        from airflow_provider_p2psms.exceptions import P2PSmsError

        try:
            await sync_to_async(self._deliver, thread_sensitive=False)()
        except P2PSmsError as error:
            self._failed(error)

    def _deliver(self) -> None:
        """Send the text to every valid number; raises ``P2PSmsError`` when nothing could be sent."""
        from airflow_provider_p2psms.exceptions import InvalidPhoneNumber, P2PSmsError
        from airflow_provider_p2psms.hooks.factory import get_sms_hook
        from airflow_provider_p2psms.models import OutgoingSms
        from airflow_provider_p2psms.utils.phone import mask_phone

        text = self._fitted(str(self.message).strip())
        numbers = self._numbers()
        hook = get_sms_hook(self.sms_conn_id)
        recipients: dict[str, None] = {}
        for number in numbers:
            try:
                # After normalizing: "0912 123 4567" and "+98912…" are one number, texted once.
                recipients[hook.normalize_number(number)] = None
            except InvalidPhoneNumber as error:
                self.log.warning("SMS notification: leaving out %s", error)
        messages = [OutgoingSms(recipient, text) for recipient in recipients]
        if not messages or not text:
            raise P2PSmsError(
                "SMS notification not sent: " + ("the message is empty." if not text else "no valid phone number.")
            )
        for start in range(0, len(messages), hook.batch_size):
            hook.send_batch(messages[start : start + hook.batch_size])
        self.log.info(
            "SMS notification sent through %s to %s.",
            hook.provider_name,
            ", ".join(mask_phone(m.recipient) for m in messages[:10]),
        )

    def _failed(self, error: Exception) -> None:
        """A callback must not break the task it reports on: log the error, unless ``raise_on_error``."""
        if self.raise_on_error:
            raise error
        self.log.error("SMS notification failed (connection '%s'): %s", self.sms_conn_id, error)

    def _numbers(self) -> list[Any]:
        """The numbers to text: a list, one number, or a list rendered to a string by a template."""
        value = self.phone_numbers
        if isinstance(value, str) and value.strip().startswith(("[", "(")):
            from airflow_provider_p2psms.campaign.recipients import parse_rendered

            value = parse_rendered(value, "phone_numbers")
        return [value] if isinstance(value, str | int) else list(value)

    def _fitted(self, text: str) -> str:
        """``text``, cut to :attr:`max_parts` SMS parts with a closing ``…`` if it is longer."""
        from airflow_provider_p2psms.utils.text import count_sms_parts

        parts = count_sms_parts(text)
        if parts <= self.max_parts:
            return text
        low, high = 0, len(text)
        while low < high:  # the longest prefix that fits with the marker
            middle = (low + high + 1) // 2
            if count_sms_parts(text[:middle].rstrip() + _CUT) <= self.max_parts:
                low = middle
            else:
                high = middle - 1
        fitted = text[:low].rstrip() + _CUT
        self.log.warning(
            "SMS notification: the text needs %d SMS parts; cut to %d parts (max_parts=%d), %d of %d characters kept.",
            parts,
            count_sms_parts(fitted),
            self.max_parts,
            low,
            len(text),
        )
        return fitted


#: Ends a notification cut to fit ``max_parts``.
_CUT = "…"

send_p2p_sms_notification = P2PSmsNotifier
