"""The interface every SMS gateway hook offers.

The operator, the sensor, the trigger and the notifier talk only to :class:`P2PSmsHook`: send a
batch (or a whole stream of messages), read delivery states, normalize a number, know the batch
limit, and price a text and read the account's credit where the gateway can (:mod:`.cost`). A
gateway is one subclass that knows its URLs, its envelopes and its status codes; adding one is a new
module in this package plus one entry in ``get_provider_info``, where the facts every part of Airflow
reads about a gateway (its names, labels, default URL) are declared once.

Gateways describe their status look-ups as *flows* (:mod:`~airflow_provider_p2psms.hooks.flows`):
generators that yield the requests they need and receive each answer. The same flow runs over the
pooled ``requests`` session in a worker (:meth:`P2PSmsHook.get_statuses`) and over an async client
in the triggerer (:meth:`P2PSmsHook.aget_statuses`), so the URLs, envelopes and status codes of a
gateway are written once. The HTTP plumbing and its retry rules live in
:mod:`~airflow_provider_p2psms.hooks.transport`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseHook

from airflow_provider_p2psms.exceptions import (
    P2PSmsError,
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsRequestRejected,
)
from airflow_provider_p2psms.get_provider_info import gateway_facts
from airflow_provider_p2psms.hooks import transport
from airflow_provider_p2psms.hooks.connection_form import LegacyConnectionForm
from airflow_provider_p2psms.hooks.cost import CostQueries
from airflow_provider_p2psms.hooks.flows import FlowRunner, StatusLookup, in_order
from airflow_provider_p2psms.hooks.settings import GatewaySettings, read_settings
from airflow_provider_p2psms.hooks.transport import ApiCall, GatewayResponse, RequestKind
from airflow_provider_p2psms.models import BatchResult, DeliveryState, OutgoingSms, SmsReceipt, message_key
from airflow_provider_p2psms.utils.phone import to_ascii_digits, to_national_mobile

if TYPE_CHECKING:
    from datetime import datetime

    import httpx
    import requests

    from airflow_provider_p2psms.campaign.ledger import SendLedger

#: Class attributes filled from the gateway's entry in ``get_provider_info``: attribute -> entry key.
_FACTS = {
    "hook_name": "hook-name",
    "provider_name": "provider-name",
    "default_base_url": "default-base-url",
    "token_label": "token-label",
    "sender_example": "sender-example",
}


class P2PSmsHook(LegacyConnectionForm, CostQueries, BaseHook):
    """
    Base class of the SMS gateway hooks.

    Connection fields, the same for every gateway:

    * ``password``: the API token or key (required).
    * ``host``: base URL override, e.g. ``http://127.0.0.1:8080``; default :attr:`default_base_url`.
    * extra ``sender``: the sender line (aliases ``gateway_number``, ``from_number``).
    * extra ``timeout`` (seconds, default 30), ``max_retries`` (default 5), ``retry_backoff``
      (seconds, first backoff, default 1), ``status_concurrency`` (status requests in flight at once, in a
      worker or the triggerer, default 16; the older ``max_concurrency`` when only it is set),
      ``batch_size`` (messages per send request, at most :attr:`max_batch_size`),
      ``verify_ssl`` (default true; turn off only for a test server with a self-signed certificate).

    :param sms_conn_id: the Airflow connection to use; default :attr:`default_conn_name`.
    :param send_time_hint: what to suggest when ``send_time`` is given to a gateway that cannot
        schedule; :func:`~airflow_provider_p2psms.hooks.factory.get_sms_hook` names the gateways that can.
    """

    conn_name_attr = "sms_conn_id"
    default_conn_name: ClassVar[str] = "sms_default"
    conn_type: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""
    #: The gateway's name in messages, e.g. "Bitel".
    provider_name: ClassVar[str] = ""
    #: The documented API base URL; connection ``host`` overrides it.
    default_base_url: ClassVar[str] = ""
    #: What the UI calls the password field.
    token_label: ClassVar[str] = "API token"
    #: A sender line in the form the gateway expects, for help texts and errors.
    sender_example: ClassVar[str] = ""
    #: The most messages one send request may carry.
    max_batch_size: ClassVar[int] = 100
    #: Whether :meth:`send_batch` accepts ``send_time``.
    supports_send_time: ClassVar[bool] = False
    #: Whether the ``sender`` extra is required.
    sender_required: ClassVar[bool] = False

    def __init__(
        self, sms_conn_id: str | None = None, *, send_time_hint: Callable[[], str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.sms_conn_id = sms_conn_id or self.default_conn_name
        self._send_time_hint = send_time_hint

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        facts = gateway_facts(cls.conn_type) if "conn_type" in cls.__dict__ else None
        for attribute, key in _FACTS.items():
            if facts is not None and attribute not in cls.__dict__:
                setattr(cls, attribute, facts[key])

    # ------------------------------------------------------------------ connection and transport

    @cached_property
    def settings(self) -> GatewaySettings:
        """The connection's settings, read and validated once."""
        return read_settings(self, self.get_connection(self.sms_conn_id))

    @cached_property
    def session(self) -> requests.Session:
        """One pooled session per hook, shared by the threads that send batches or read statuses."""
        return transport.open_session(self.settings, self._auth_headers(self.settings.token))

    def get_conn(self) -> requests.Session:
        """Return the pooled, authenticated HTTP session."""
        return self.session

    def async_client(self) -> httpx.AsyncClient:
        """A new async HTTP client for this connection (close it, or use it in ``async with``)."""
        from airflow_provider_p2psms.hooks import async_transport

        return async_transport.open_client(self.settings, self._auth_headers(self.settings.token))

    def close(self) -> None:
        """Close the pooled connections, if any were opened."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        kind: RequestKind,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        batch: Sequence[OutgoingSms] = (),
    ) -> GatewayResponse:
        """
        Make one API call with the transport's retry rules and return the decoded answer.

        2xx answers are returned; 401 and other 4xx are raised through :meth:`error_for`.

        :param path: the documented path, appended to the base URL.
        :param kind: ``"send"`` (never resent unless provably unprocessed) or ``"read"``.
        :param batch: for sends, the messages, carried by an uncertain-send error.
        """
        return transport.request(self, ApiCall(method, path, params, json), kind=kind, batch=batch)

    # ------------------------------------------------------------------ the interface

    @property
    def batch_size(self) -> int:
        """Messages per send request: the connection's ``batch_size`` extra, at most :attr:`max_batch_size`."""
        return self.settings.batch_size

    def normalize_number(self, value: Any) -> str:
        """
        Return ``value`` as an Iranian mobile number in this gateway's wire format.

        :raises InvalidPhoneNumber: if it is not one (the message carries a masked copy).
        """
        return self.format_national(to_national_mobile(value))

    def format_national(self, national: str) -> str:
        """Turn a 10-digit national mobile number (``9121234567``) into the wire format."""
        raise NotImplementedError

    def normalize_sender(self, sender: str) -> str:
        """Bring the ``sender`` extra into the form the gateway expects."""
        return to_ascii_digits(sender)

    def prepare_batch(self, messages: Sequence[OutgoingSms], *, send_time: datetime | None = None) -> Any:
        """The request of a batch, built ahead of :meth:`send_batch` (its ``prepared``) by the thread reading the
        messages, so that the sending threads only make requests; ``None`` (this default): built at send."""
        return None

    def send_batch(
        self,
        messages: Sequence[OutgoingSms],
        *,
        send_time: datetime | None = None,
        after_uncertain: bool = False,
        prepared: Any = None,
    ) -> list[SmsReceipt]:
        """
        Send one peer-to-peer batch: each message to its own recipient.

        What each answer means, and which ones are retried, is the table in
        :mod:`~airflow_provider_p2psms.hooks.transport`.

        :param messages: at most :attr:`batch_size` messages, recipients in wire format.
        :param send_time: schedule the batch (timezone-aware); only where :attr:`supports_send_time`.
        :param after_uncertain: an earlier attempt at these messages left their fate unknown (a retry
            resending what an earlier try left uncertain). A 429 or 503 then means "uncertain", not
            "not processed": IPPanel answers 429 to a copy of a request it accepted in the last 40 s.
            Default ``False``.
        :param prepared: what :meth:`prepare_batch` returned for these messages and ``send_time``, if anything.
        :return: one receipt per message, in the order given.
        :raises SmsUncertainSendError: the gateway may or may not have accepted the batch.
        :raises SmsRecipientsRefused: the gateway refused the batch for its recipients or texts and
            accepted none of it (``refused`` names the recipients, when the gateway does).
        :raises SmsRequestRejected: the gateway refused the request for another reason (the sender line).
        """
        raise NotImplementedError

    def send_messages(
        self,
        messages: Iterable[OutgoingSms | tuple[Any, str]],
        *,
        max_concurrency: int = 4,
        send_time: datetime | None = None,
        ledger: SendLedger | None = None,
        on_rejected: str = "isolate",
    ) -> Iterator[BatchResult]:
        """
        Send any number of messages in batches of :attr:`batch_size`, ``max_concurrency`` requests at a time.

        A stream, not a list: messages are read from ``messages`` as batches free up, and one
        :class:`~airflow_provider_p2psms.models.BatchResult` is yielded per batch as its answer
        comes (accepted with its receipts, uncertain, or rejected), so a million messages take the
        memory of a few batches. After the batches in flight are answered, an error that makes sending
        pointless (a refused token or sender line, a gateway that stays unavailable) is raised.

        :param messages: ``(number, text)`` pairs, the number in any spelling (a number that is not an
            Iranian mobile raises ``InvalidPhoneNumber`` before its batch goes out), or ``OutgoingSms``
            whose recipient is already in wire format (see :meth:`normalize_number`).
        :param max_concurrency: send requests in flight at once; default 4.
        :param send_time: schedule every batch, where :attr:`supports_send_time`.
        :param ledger: a loaded :class:`~airflow_provider_p2psms.campaign.ledger.SendLedger`: each batch
            is marked in it just before it is sent and its receipts are written after, so that a later
            try can tell what went out; a worker killed at any moment leaves at most
            ``2 * max_concurrency * batch_size`` messages uncertain. Leaving out what an earlier try sent
            is the caller's job; messages the ledger holds as uncertain that are passed again are resent
            in batches of their own, as attempts after an uncertain one (``send_batch``'s ``after_uncertain``).
        :param on_rejected: what a batch refused for its recipients or texts does: ``"isolate"`` (default)
            splits it to find the messages the gateway refuses (by the recipients it names, else by
            halving), yields those as rejected and sends every other one; ``"fail"`` raises the refusal.
        """
        from airflow_provider_p2psms.campaign.dispatch import send_keyed

        def keyed() -> Iterator[tuple[int, OutgoingSms]]:
            for item in messages:
                if isinstance(item, OutgoingSms):
                    message = item
                else:
                    number, text = item
                    message = OutgoingSms(self.normalize_number(number), text)
                yield message_key(message.recipient, message.text), message

        return send_keyed(
            self,
            keyed(),
            max_concurrency=max_concurrency,
            send_time=send_time,
            ledger=ledger,
            log=self.log,
            on_rejected=on_rejected,
        )

    def send_rows(
        self,
        rows: Iterable[Any],
        message: str,
        *,
        phone_field: str = "phone",
        max_parts: int = 8,
        max_concurrency: int = 4,
        send_time: datetime | None = None,
        ledger: SendLedger | None = None,
    ) -> Iterator[BatchResult]:
        """
        Render ``message`` (a Jinja template) once per row and send each row its text, as :meth:`send_messages`.

        Rows are dicts (the row is ``row`` in the template) or plain numbers. Row values are data, never
        rendered as templates; repeated (number, text) pairs are sent once. A row that cannot be sent (a
        bad number, an empty or too long text) raises ``SmsInputError`` naming the row, before its batch
        goes out: check rows up front, or use ``P2PSmsOperator``, which skips and reports them.
        """
        from airflow_provider_p2psms.campaign.dispatch import send_keyed
        from airflow_provider_p2psms.campaign.recipients import MessageBuilder, compile_template

        builder = MessageBuilder(
            template=compile_template(message),
            context={},
            normalize=self.normalize_number,
            phone_field=phone_field,
            max_parts=max_parts,
            fail_on_invalid=True,
        )
        return send_keyed(
            self,
            builder.build(rows),
            max_concurrency=max_concurrency,
            send_time=send_time,
            ledger=ledger,
            log=self.log,
        )

    def status_lookups(self, receipts: Sequence[SmsReceipt]) -> list[StatusLookup]:
        """Split ``receipts`` into independent look-ups (a gateway's flows), which may run concurrently."""
        raise NotImplementedError

    def get_statuses(self, receipts: Sequence[SmsReceipt]) -> list[DeliveryState]:
        """Read the delivery state of each receipt; one result per receipt, in the order given."""
        lookups = self.status_lookups(receipts)
        workers = min(self.settings.status_concurrency, len(lookups))
        if workers <= 1:
            found = [self._run(lookup) for lookup in lookups]
        else:
            from concurrent.futures import ThreadPoolExecutor

            self.get_conn()  # one session for all threads: cached_property does not lock on Python 3.12+
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="p2psms-status") as pool:
                found = list(pool.map(self._run, lookups))
        return in_order(lookups, found, len(receipts))

    async def aget_statuses(self, receipts: Sequence[SmsReceipt], client: httpx.AsyncClient) -> list[DeliveryState]:
        """:meth:`get_statuses` on an async client (see :meth:`async_client`), ``status_concurrency`` at a time."""
        from airflow_provider_p2psms.hooks import async_transport

        lookups = self.status_lookups(receipts)
        found = await async_transport.run_lookups(self, client, lookups, self.settings.status_concurrency)
        return in_order(lookups, found, len(receipts))

    def _run(self, lookup: StatusLookup) -> list[DeliveryState]:
        runner = FlowRunner(lookup.flow)
        while (call := runner.next_call()) is not None:
            try:
                runner.answered(transport.request(self, call, kind="read"))
            except P2PSmsError as error:
                runner.failed(error)
        return runner.states

    def test_connection(self) -> tuple[bool, str]:
        """Make a harmless authenticated call; ``(True, message)`` if the token works."""
        raise NotImplementedError

    def connection_test_failure(self, error: P2PSmsError) -> tuple[bool, str]:
        """The answer of a failed connection test.

        The Airflow UI tests a connection under a temporary id, so a bad token is reported without one.
        """
        if isinstance(error, SmsAuthenticationError):
            return False, (
                f"{self.provider_name} refused the {self.token_label} (HTTP 401). "
                f"Put a valid {self.token_label} in the password field."
            )
        return False, str(error)

    # ------------------------------------------------------------------ shared helpers

    def check_batch(self, messages: Sequence[OutgoingSms], send_time: datetime | None) -> None:
        """Refuse a batch the gateway would refuse, before anything goes on the wire."""
        if not messages:
            raise ValueError("send_batch() needs at least one message")
        if len(messages) > self.batch_size:
            raise ValueError(f"{len(messages)} messages exceed {self.provider_name}'s batch size of {self.batch_size}")
        if send_time is not None:
            if not self.supports_send_time:
                hint = self._send_time_hint() if self._send_time_hint else "Leave send_time unset."
                raise SmsConfigurationError(
                    f"{self.provider_name} cannot schedule a send (send_time); connection "
                    f"'{self.sms_conn_id}' is a {self.provider_name} connection. {hint}"
                )
            if send_time.tzinfo is None:
                raise SmsConfigurationError("send_time must be timezone-aware (e.g. pendulum.datetime(..., tz='UTC')).")

    def error_for(self, response: GatewayResponse) -> P2PSmsError:
        """Turn a 4xx answer into the right exception; gateways override to read their envelope."""
        if response.status_code == 401:
            return self.authentication_error()
        return SmsRequestRejected(
            self.provider_name,
            response.status_code,
            None,
            hint=f"Check the base URL of connection '{self.sms_conn_id}' ({self.settings.base_url}).",
        )

    def authentication_error(self) -> SmsAuthenticationError:
        return SmsAuthenticationError(
            f"{self.provider_name} refused the {self.token_label} of connection '{self.sms_conn_id}' (HTTP 401). "
            f"Put a valid {self.token_label} in the connection's password field."
        )

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError
