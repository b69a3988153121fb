"""The sandbox's knobs: accepted credentials, delivery speed and injected faults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_BITEL_TOKEN = "sandbox-bitel-token"
DEFAULT_IPPANEL_KEY = "sandbox-ippanel-key"
DEFAULT_BITEL_GATEWAY = "10009909"
DEFAULT_IPPANEL_SENDER = "+983000505"

BitelStatusShape = Literal["code", "v2"]
BITEL_STATUS_SHAPES: tuple[BitelStatusShape, ...] = ("code", "v2")

_NON_NEGATIVE_NUMBERS = (
    "delivery_seconds",
    "latency_ms",
    "retry_after_seconds",
    "duplicate_window_seconds",
    "ippanel_credit",
)
_SEND_RATES = ("send_5xx_rate", "send_429_rate", "send_drop_rate")
_STATUS_RATES = ("status_5xx_rate", "status_429_rate", "status_drop_rate")
_OPTIONAL_INTEGERS = ("fail_sends_after", "seed")
_RATE_LIMITS = ("bitel_rate_limit", "ippanel_rate_limit")
_STRING_LISTS = ("bitel_tokens", "ippanel_tokens", "bitel_gateways", "ippanel_senders")


@dataclass(frozen=True)
class SandboxConfig:
    """Behaviour of a sandbox server; every field can be changed at runtime.

    The constructor validates and normalizes its values (numbers become floats, lists
    of strings become tuples) and raises :class:`ValueError` on a bad one, so a
    configuration read from JSON or the command line fails loudly and early.

    :param delivery_seconds: seconds from acceptance to the final delivery status; a
        message is "at the operator" for the second half of that time. ``0`` makes
        every message final at once. Default ``2.0``.
    :param latency_ms: delay added before answering every API request (control
        endpoints excluded); the request is processed first, so a client that times
        out during the delay has still had its messages accepted. Default ``0``.
    :param send_5xx_rate: share (0..1) of send requests answered with 503 and not recorded.
    :param send_429_rate: share (0..1) of send requests answered with 429 and a
        ``Retry-After`` header, not recorded.
    :param send_drop_rate: share (0..1) of send requests that are accepted and recorded,
        after which the connection is closed without a response.
    :param status_5xx_rate: as ``send_5xx_rate``, for status and report requests.
    :param status_429_rate: as ``send_429_rate``, for status and report requests.
    :param status_drop_rate: share (0..1) of status and report requests whose connection
        is closed without a response.
    :param retry_after_seconds: value of the ``Retry-After`` header on a 429. Default ``1``.
    :param fail_sends_after: once this many send requests have been accepted (counted
        from when the knob was last set, or from start/reset), every further send
        request answers 503. ``None`` (default) disables it.
    :param seed: seed of the random generator that decides the injected faults, so a
        fault sequence can be replayed. ``None`` (default) seeds from the OS.
    :param bitel_tokens: Bearer tokens Bitel accepts. Default ``("sandbox-bitel-token",)``.
    :param ippanel_tokens: raw ``Authorization`` keys IPPanel accepts.
        Default ``("sandbox-ippanel-key",)``.
    :param bitel_gateways: Bitel gateway numbers of the account; the first is the
        default gateway. Default ``("10009909",)``.
    :param ippanel_senders: IPPanel ``from_number`` lines of the account.
        Default ``("+983000505",)``.
    :param bitel_status_shape: shape of Bitel's status result: ``"code"`` (default,
        ``statusCode`` int + ``status`` name) or ``"v2"`` (``status`` int + ``statusText``).
    :param duplicate_window_seconds: IPPanel's duplicate guard: a send request identical to one
        accepted less than this many seconds ago (same sender, same recipients and texts) is answered
        429 and not recorded. Default ``40``, as IPPanel documents; ``0`` turns the guard off.
    :param ippanel_names_refused: whether IPPanel's 422 for a refused recipient names it by its place
        in the request (``params.0.recipients.3``, the default), or only says ``recipients`` (``False``),
        as a gateway that does not tell which one.
    :param ippanel_credit: the balance IPPanel's ``/api/payment/credit/mine`` answers; sends do not
        lower it. Default ``1000000``. (Prices: see :mod:`.ippanel_account`.)
    :param bitel_rate_limit: the most messages a second Bitel's send endpoints take: a send that would
        go over is answered 429, with a ``Retry-After`` saying when it would fit, and not recorded (see
        :mod:`.dispatch`). ``None`` (default): no limit. Neither gateway documents one.
    :param ippanel_rate_limit: the same for IPPanel's ``POST /v1/api/send``.
    """

    delivery_seconds: float = 2.0
    latency_ms: float = 0.0
    send_5xx_rate: float = 0.0
    send_429_rate: float = 0.0
    send_drop_rate: float = 0.0
    status_5xx_rate: float = 0.0
    status_429_rate: float = 0.0
    status_drop_rate: float = 0.0
    retry_after_seconds: float = 1.0
    fail_sends_after: int | None = None
    seed: int | None = None
    bitel_tokens: tuple[str, ...] = (DEFAULT_BITEL_TOKEN,)
    ippanel_tokens: tuple[str, ...] = (DEFAULT_IPPANEL_KEY,)
    bitel_gateways: tuple[str, ...] = (DEFAULT_BITEL_GATEWAY,)
    ippanel_senders: tuple[str, ...] = (DEFAULT_IPPANEL_SENDER,)
    bitel_status_shape: BitelStatusShape = "code"
    duplicate_window_seconds: float = 40.0
    ippanel_names_refused: bool = True
    ippanel_credit: float = 1000000.0
    bitel_rate_limit: float | None = None
    ippanel_rate_limit: float | None = None

    def __post_init__(self) -> None:
        for name in (*_NON_NEGATIVE_NUMBERS, *_SEND_RATES, *_STATUS_RATES):
            number = _number(name, getattr(self, name))
            if number < 0 or (name.endswith("_rate") and number > 1):
                raise ValueError(f"{name} must be {'between 0 and 1' if name.endswith('_rate') else '>= 0'}")
            object.__setattr__(self, name, number)
        for rates in (_SEND_RATES, _STATUS_RATES):
            if sum(getattr(self, name) for name in rates) > 1:
                raise ValueError(f"{' + '.join(rates)} must not exceed 1")
        for name in _OPTIONAL_INTEGERS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer or null")
        for name in _RATE_LIMITS:
            if (value := getattr(self, name)) is not None:
                if _number(name, value) <= 0:
                    raise ValueError(f"{name} must be a number of messages a second above 0, or null")
                object.__setattr__(self, name, float(value))
        if self.fail_sends_after is not None and self.fail_sends_after < 0:
            raise ValueError("fail_sends_after must be >= 0")
        for name in _STRING_LISTS:
            object.__setattr__(self, name, _string_tuple(name, getattr(self, name)))
        if not isinstance(self.ippanel_names_refused, bool):
            raise ValueError("ippanel_names_refused must be true or false")
        if self.bitel_status_shape not in BITEL_STATUS_SHAPES:
            raise ValueError(f"bitel_status_shape must be one of {', '.join(BITEL_STATUS_SHAPES)}")

    def updated(self, changes: Mapping[str, object]) -> SandboxConfig:
        """Return a copy with some fields changed.

        :param changes: field names and their new values, e.g. parsed from JSON.
        :raises ValueError: on an unknown field or an invalid value.
        """
        unknown = sorted(set(changes) - {field.name for field in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown sandbox config field(s): {', '.join(unknown)}")
        fields: dict[str, Any] = dict(changes)
        return dataclasses.replace(self, **fields)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as JSON-ready data (tuples become lists)."""
        return {
            field.name: list(value) if isinstance(value := getattr(self, field.name), tuple) else value
            for field in dataclasses.fields(self)
        }


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number")
    return float(value)


def _string_tuple(name: str, value: object) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(item, str) and item for item in value)
    ):
        raise ValueError(f"{name} must be a non-empty list of non-empty strings")
    return tuple(value)
