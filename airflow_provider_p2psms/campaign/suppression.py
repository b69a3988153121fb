"""The suppression list: numbers that get no text, whatever the recipient rows say.

A campaign's ``exclude`` (numbers in any spelling, e.g. an upstream task's XCom) and ``exclude_sql``
(one column of numbers, streamed from ``exclude_conn_id``) are read into one :class:`Suppression`
before the first row. Each number is parsed as the rows' numbers are
(:func:`~airflow_provider_p2psms.utils.phone.to_national_mobile`), so ``+98 912 123 4567``,
``09121234567`` and ``۹۱۲۱۲۳۴۵۶۷`` are one number, and kept as its 10 national digits read as an
integer, in a :class:`~airflow_provider_p2psms.campaign.keyset.KeySet`: about 8.5 bytes a number, so a
million-number list costs about 9 MB, not the 100 MB of a set of strings. A recipient is looked up
after normalization (:meth:`Suppression.covers`).

An entry that is not a mobile number matches no recipient (a recipient must be one); such entries are
counted and reported with masked examples, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow_provider_p2psms.campaign.keyset import KeySet
from airflow_provider_p2psms.exceptions import InvalidPhoneNumber, SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.utils.phone import to_national_mobile

#: Masked examples of unreadable entries kept for the log.
SAMPLE = 3


class Suppression:
    """The numbers of a suppression list, as national-number keys; see the module docstring."""

    def __init__(self) -> None:
        self._keys = KeySet()
        self.entries = 0  # entries read, readable or not
        self.unreadable = 0
        self.unreadable_sample: list[str] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, values: Iterable[Any]) -> None:
        """Add numbers in any spelling; an entry that is not a mobile number is counted as unreadable."""
        keys = self._keys
        for value in values:
            self.entries += 1
            try:
                keys.add(int(to_national_mobile(value)))
            except InvalidPhoneNumber as error:
                self.unreadable += 1
                if len(self.unreadable_sample) < SAMPLE:
                    self.unreadable_sample.append(f"{error.masked} {error.reason}")

    def covers(self, recipient: str) -> bool:
        """Whether a normalized recipient (any gateway's wire format: it ends in the 10 national digits) is listed."""
        return int(recipient[-10:]) in self._keys

    def describe(self) -> str:
        """A log line: how many numbers, and the unreadable entries, masked."""
        line = f"Suppression list: {len(self):,} numbers from {self.entries:,} entries."
        if self.unreadable:
            line += (
                f" {self.unreadable:,} entries are not mobile numbers and match no recipient, e.g. "
                + "; ".join(self.unreadable_sample)
                + "."
            )
        return line


def load_suppression(
    *,
    exclude: Any,
    exclude_sql: str | None,
    exclude_conn_id: str | None,
    phone_field: str,
    fetch_size: int,
) -> Suppression | None:
    """
    The suppression list of ``exclude`` and ``exclude_sql`` together, or ``None`` when neither is set.

    :param exclude: numbers, or rows holding one in ``phone_field``; a JSON or Python-literal string of
        such a list (what a template of an XCom renders to) works too.
    :param exclude_sql: a query returning one column of numbers, run on ``exclude_conn_id``.
    """
    if exclude is None and not exclude_sql:
        return None
    suppression = Suppression()
    if exclude is not None:
        suppression.add(_listed(exclude, phone_field))
    if exclude_sql:
        if not exclude_conn_id:
            raise SmsConfigurationError(
                "exclude_sql needs exclude_conn_id (or sql_conn_id), the connection to run it on."
            )
        suppression.add(_queried(exclude_sql, exclude_conn_id, fetch_size))
    return suppression


def _listed(exclude: Any, phone_field: str) -> Iterator[Any]:
    from airflow_provider_p2psms.campaign.recipients import parse_rendered

    value = exclude
    if isinstance(value, str):
        value = parse_rendered(value, "exclude") if value.strip()[:1] in ("[", "(") else [value]
    if isinstance(value, Mapping) or not isinstance(value, Iterable) or isinstance(value, bytes):
        raise SmsInputError(
            f"exclude must be a list of phone numbers (or rows with a '{phone_field}' field), "
            f"got {type(value).__name__}. Pass an upstream task's output, e.g. exclude=opt_outs.output."
        )
    for position, entry in enumerate(value, start=1):
        if isinstance(entry, Mapping):
            if phone_field not in entry:
                names = ", ".join(map(str, entry)) or "none"
                raise SmsInputError(
                    f"exclude entry {position} is a row without the field '{phone_field}' (phone_field; its "
                    f"fields: {names}). Nothing was sent."
                )
            entry = entry[phone_field]
        yield entry


def _queried(sql: str, conn_id: str, fetch_size: int) -> Iterator[Any]:
    from airflow_provider_p2psms.campaign.recipients import sql_rows

    for row in sql_rows(sql, conn_id, None, fetch_size, what="exclude_sql query", conn_arg="exclude_conn_id"):
        if len(row) != 1:
            raise SmsInputError(
                f"The exclude_sql query on connection '{conn_id}' must return one column of phone numbers; "
                f"it returns {len(row)}: {', '.join(map(str, row))}. Nothing was sent."
            )
        yield next(iter(row.values()))
