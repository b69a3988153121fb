"""What a campaign will cost, worked out before its first message goes out, and the limits that refuse it.

A campaign's messages are tallied, not kept: one counter per (parts, network) pair, and one sample text
per parts count: a stand-in of the same encoding and parts
(:func:`~airflow_provider_p2psms.utils.text.stand_in_text`), so that no recipient's words reach the
price endpoint. The gateway is then asked the price of each sample text once (``price_quote``: the
price of a text depends on its parts and on the recipient's network, MCI or other), and each counter is
multiplied by its price; a number whose network the carrier metadata does not know (see
:mod:`~airflow_provider_p2psms.utils.carrier`) is priced at the higher of the two. The memory is a few
counters whatever the campaign's size.

``check_credit`` compares the estimate with the account's credit, ``max_cost`` with a fixed limit. Either
makes the send read, render and check every row first, keeping the messages on disk (as
``on_invalid="fail"`` does), and refuse before sending anything when the estimate is too high. A
gateway that cannot price a text before sending refuses both at the start, before a row is read.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_p2psms.campaign.recipients import spooled, text_parts
from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.models import CostEstimate, PartsEstimate
from airflow_provider_p2psms.utils.carrier import NETWORKS, Network, network_of
from airflow_provider_p2psms.utils.text import stand_in_text

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator

    from airflow_provider_p2psms.hooks.base import P2PSmsHook
    from airflow_provider_p2psms.models import OutgoingSms


@dataclass(frozen=True)
class CostLimits:
    """
    The operator's cost limits, typed once its fields are rendered.

    :param check_credit: refuse a campaign whose estimate is more than the account's credit.
    :param max_cost: refuse a campaign whose estimate is more than this; ``None``: no limit.
    """

    check_credit: bool = False
    max_cost: float | None = None

    @property
    def active(self) -> bool:
        """Whether the send must be estimated before it starts."""
        return self.check_credit or self.max_cost is not None

    def require(self, hook: P2PSmsHook) -> None:
        """Refuse, before any row is read, limits the hook's gateway cannot check."""
        if self.max_cost is not None and not hook.supports_price_quote:
            raise hook.cost_unsupported("a price before sending (max_cost)")
        if self.check_credit and not (hook.supports_price_quote and hook.supports_credit):
            raise hook.cost_unsupported("a price before sending and the account's credit (check_credit)")


class CostTally:
    """Messages counted by (parts, network), with one sample text per parts count."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[int, Network]] = Counter()
        self.samples: dict[int, str] = {}

    def add(self, message: OutgoingSms) -> None:
        parts = text_parts(message)
        self.counts[(parts, network_of(message.recipient))] += 1
        if parts not in self.samples:
            self.samples[parts] = stand_in_text(message.text)  # no recipient's words reach the price endpoint

    def counting(self, messages: Iterable[tuple[int, OutgoingSms]]) -> Iterator[tuple[int, OutgoingSms]]:
        """Pass ``messages`` through, tallying each."""
        for key, message in messages:
            self.add(message)
            yield key, message

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def networks(self) -> dict[str, int]:
        """Messages per network class, every class listed."""
        found: dict[str, int] = dict.fromkeys(NETWORKS, 0)
        for (_, network), count in self.counts.items():
            found[network] += count
        return found


def estimate_cost(hook: P2PSmsHook, tally: CostTally, *, credit: bool) -> CostEstimate:
    """
    Price the tally with the gateway's quotes: one ``price_quote`` per parts count; then the credit, if asked.

    :param credit: read the account's credit into the estimate (else it is ``None``).
    """
    by_parts: dict[str, PartsEstimate] = {}
    for parts in sorted(tally.samples):
        quote = hook.price_quote(tally.samples[parts])
        counted = {network: tally.counts[(parts, network)] for network in NETWORKS}
        cost = (
            counted["mci"] * quote.mci_price
            + counted["other"] * quote.other_price
            + counted["unknown"] * max(quote.mci_price, quote.other_price)
        )
        by_parts[str(parts)] = PartsEstimate(
            messages=sum(counted.values()), mci_price=quote.mci_price, other_price=quote.other_price, cost=cost
        )
    return CostEstimate(
        cost=sum(entry["cost"] for entry in by_parts.values()),
        by_parts=by_parts,
        networks=tally.networks(),
        credit=hook.credit() if credit else None,
    )


def describe(estimate: CostEstimate) -> str:
    """The estimate in one line, for logs and errors: no number or text of a recipient in it."""
    parts = "; ".join(
        f"{entry['messages']} of {parts} part{'s' if parts != '1' else ''} at "
        f"{_money(entry['mci_price'])} (MCI) / {_money(entry['other_price'])} (other)"
        for parts, entry in estimate["by_parts"].items()
    )
    networks = ", ".join(f"{count} {network}" for network, count in estimate["networks"].items())
    credit = "" if estimate["credit"] is None else f"; credit {_money(estimate['credit'])}"
    return f"Estimated cost {_money(estimate['cost'])} ({parts or 'no messages'}; networks: {networks}){credit}"


def _money(value: float) -> str:
    """``1,234,567`` or ``2,370.5``: never an exponent."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def enforce(estimate: CostEstimate, limits: CostLimits, *, provider: str, sms_conn_id: str) -> None:
    """Raise :class:`SmsConfigurationError`, naming the estimate, when it breaks a limit."""
    cost, balance = estimate["cost"], estimate["credit"]
    problems = []
    if limits.check_credit and balance is not None and cost > balance:
        problems.append(
            f"the estimated cost {_money(cost)} is more than the credit {_money(balance)} of the {provider} account of "
            f"connection '{sms_conn_id}' (check_credit=True): top the account up, or send fewer or shorter texts"
        )
    if limits.max_cost is not None and cost > limits.max_cost:
        problems.append(
            f"the estimated cost {_money(cost)} is more than max_cost {_money(limits.max_cost)}: raise max_cost, "
            "or send fewer or shorter texts"
        )
    if problems:
        raise SmsConfigurationError(f"Nothing was sent: {'; '.join(problems)}. {describe(estimate)}.")


class CostCheck:
    """
    The estimate a send makes before its first message, when the limits ask for one.

    :param hook: the gateway's hook, which prices the texts.
    :param limits: the limits to enforce.
    :param sms_conn_id: the connection, named in errors.
    :param log: where the estimate is logged.
    """

    def __init__(self, hook: P2PSmsHook, limits: CostLimits, sms_conn_id: str, log: Any) -> None:
        limits.require(hook)
        self.hook = hook
        self.limits = limits
        self.sms_conn_id = sms_conn_id
        self.log = log
        #: The estimate, once :meth:`checked` has made it.
        self.estimate: CostEstimate | None = None

    def checked(self, messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[tuple[int, OutgoingSms]]:
        """
        Read, check and spool every message now, estimate them and enforce the limits; then the messages.

        Runs in the caller's thread, before anything is sent: the returned iterator reads the spool.

        :raises SmsConfigurationError: the estimate breaks a limit; nothing was sent.
        """
        return read_all_first(messages, self.priced)

    def priced(self, tally: CostTally) -> CostEstimate:
        """Estimate the tallied messages, log it, enforce the limits: for :meth:`checked`, or a pass that tallied."""
        self.estimate = estimate_cost(self.hook, tally, credit=self.limits.check_credit)
        self.log.info("Before sending %d messages: %s.", tally.messages, describe(self.estimate))
        enforce(self.estimate, self.limits, provider=self.hook.provider_name, sms_conn_id=self.sms_conn_id)
        return self.estimate


def read_all_first(
    messages: Iterator[tuple[int, OutgoingSms]], check: Callable[[CostTally], Any]
) -> Iterator[tuple[int, OutgoingSms]]:
    """
    Read, check and spool every message now (on disk, not in memory), tallying them, and ``check`` the tally
    before the first message is returned; then the messages, from the spool (the source is not read again).
    Runs in the caller's thread, before anything is sent; a failing check removes the spool.
    """
    tally = CostTally()
    # A generator: closing it closes (and removes) the spool file.
    spool = cast("Generator[tuple[int, OutgoingSms], None, None]", spooled(tally.counting(messages)))
    try:
        first = next(spool, None)  # every message is built, checked and on disk after this
        check(tally)
    except BaseException:
        spool.close()
        raise
    return iter(()) if first is None else itertools.chain([first], spool)


def priced_dry_run(
    hook: P2PSmsHook, tally: CostTally, limits: CostLimits | None, sms_conn_id: str, log: Any
) -> CostEstimate:
    """
    A dry run's estimate: the tally priced, with the account's credit where the gateway has a credit
    endpoint, logged; then ``limits`` enforced, so that a dry run fails where its send would.
    """
    estimate = estimate_cost(hook, tally, credit=hook.supports_credit)
    log.info(
        "Dry run on %s: %s for %d messages. Nothing was sent.", hook.provider_name, describe(estimate), tally.messages
    )
    if limits is not None:
        enforce(estimate, limits, provider=hook.provider_name, sms_conn_id=sms_conn_id)
    return estimate
