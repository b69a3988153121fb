"""Quiet hours: the daily window in which texts may go out, in the recipients' timezone."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    import pendulum


@dataclass(frozen=True)
class SendWindow:
    """
    A daily window ``[start, end)`` in ``timezone``; ``start`` after ``end`` means it spans midnight.

    :param start: opening time of day.
    :param end: closing time of day.
    :param timezone: IANA name, e.g. ``Asia/Tehran``.
    """

    start: datetime.time
    end: datetime.time
    timezone: str

    @classmethod
    def parse(cls, window: Any, timezone: str) -> SendWindow:
        """Build a window from ``("08:00", "21:00")`` (``HH:MM`` or ``HH:MM:SS``), or raise a clear error."""
        import pendulum

        if not isinstance(window, list | tuple) or len(window) != 2:
            raise SmsConfigurationError(f"send_window must be a pair of times like ('08:00', '21:00'), not {window!r}.")
        start, end = (_time_of_day(value) for value in window)
        if start == end:
            raise SmsConfigurationError(f"send_window {window!r} opens and closes at the same time.")
        try:
            pendulum.timezone(timezone)
        except Exception:
            raise SmsConfigurationError(
                f"timezone {timezone!r} is not a known IANA timezone; use a name like 'Asia/Tehran'."
            ) from None
        return cls(start, end, timezone)

    def contains(self, moment: pendulum.DateTime) -> bool:
        local = moment.in_timezone(self.timezone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_opening(self, moment: pendulum.DateTime) -> pendulum.DateTime | None:
        """``None`` if ``moment`` is inside the window, else the next time it opens (in UTC)."""
        if self.contains(moment):
            return None
        local = moment.in_timezone(self.timezone)
        opening = local.set(hour=self.start.hour, minute=self.start.minute, second=self.start.second, microsecond=0)
        if opening <= local:
            opening = opening.add(days=1)
        return opening.in_timezone("UTC")

    def next_closing(self, moment: pendulum.DateTime) -> pendulum.DateTime | None:
        """``None`` if ``moment`` is outside the window, else the time it closes next (in UTC)."""
        if not self.contains(moment):
            return None
        local = moment.in_timezone(self.timezone)
        closing = local.set(hour=self.end.hour, minute=self.end.minute, second=self.end.second, microsecond=0)
        if closing <= local:
            closing = closing.add(days=1)
        return closing.in_timezone("UTC")

    def describe(self) -> str:
        return f"{self.start.isoformat()}-{self.end.isoformat()} {self.timezone}"


def _time_of_day(value: Any) -> datetime.time:
    if isinstance(value, datetime.time):
        return value.replace(tzinfo=None)
    for pattern in ("%H:%M", "%H:%M:%S"):
        try:
            return datetime.datetime.strptime(str(value), pattern).time()
        except ValueError:
            continue
    raise SmsConfigurationError(f"send_window time {value!r} is not a time of day like '08:00' or '21:30:00'.")
