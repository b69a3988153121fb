"""The cost part of the gateway interface: what a text costs before it is sent, and the account's credit.

:class:`CostQueries` is mixed into :class:`~airflow_provider_p2psms.hooks.base.P2PSmsHook`, so every hook
answers :meth:`~CostQueries.price_quote` and :meth:`~CostQueries.credit`. By default both refuse with a
configuration error naming the gateway: a gateway that documents the endpoints sets
:attr:`~CostQueries.supports_price_quote` / :attr:`~CostQueries.supports_credit` and implements them.
Nothing is ever guessed: an estimate needs the gateway's own prices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from airflow_provider_p2psms.exceptions import SmsConfigurationError

if TYPE_CHECKING:
    from airflow_provider_p2psms.models import PriceQuote


class CostQueries:
    """Price and credit look-ups of a gateway; the defaults say the gateway has none."""

    provider_name: ClassVar[str]
    sms_conn_id: str
    #: Whether :meth:`price_quote` asks the gateway (else it raises SmsConfigurationError).
    supports_price_quote: ClassVar[bool] = False
    #: Whether :meth:`credit` asks the gateway (else it raises SmsConfigurationError).
    supports_credit: ClassVar[bool] = False
    #: What to do instead, in the error of a gateway without price or credit endpoint.
    cost_hint: ClassVar[str] = "Leave check_credit and max_cost unset for this connection."

    def price_quote(self, text: str) -> PriceQuote:
        """
        What ``text`` costs to one recipient, on MCI and on any other network, and its parts, as the gateway says.

        A read: retried on 429, 5xx and network errors; 401 and 422 raise as they do for sends.

        :raises SmsConfigurationError: the gateway has no price endpoint (:attr:`supports_price_quote`).
        """
        raise self.cost_unsupported("a price before sending")

    def credit(self) -> float:
        """
        The account's balance, in the unit of :meth:`price_quote`'s prices.

        :raises SmsConfigurationError: the gateway has no credit endpoint (:attr:`supports_credit`).
        """
        raise self.cost_unsupported("the account's credit")

    def cost_unsupported(self, what: str) -> SmsConfigurationError:
        """The error for an estimate (``check_credit``, ``max_cost``) this gateway cannot make."""
        return SmsConfigurationError(
            f"{self.provider_name} documents no price or credit endpoint, so {what} cannot be read for "
            f"connection '{self.sms_conn_id}': check_credit and max_cost need a gateway that prices a text "
            f"before it is sent. {self.cost_hint}"
        )
