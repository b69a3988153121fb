"""Which mobile network an Iranian number belongs to, from ``phonenumbers``' carrier metadata.

Gateways price a text differently on MCI (Hamrah-e Avval, ``"IR-MCI"`` in the metadata) and on the other
networks (Irancell, Rightel...). The metadata gives the network a number range was allocated to: a number
ported since to another network is classified by its old one. A range the metadata does not know is
``"unknown"``.

The metadata is a longest-prefix table, so the network of a number is decided by its first few digits:
the answer is cached per prefix of that length, and a campaign of a million numbers makes a few hundred
look-ups.
"""

from __future__ import annotations

from functools import cache
from typing import Final, Literal

from airflow_provider_p2psms.utils.phone import IRAN_COUNTRY_CODE, to_national_mobile

Network = Literal["mci", "other", "unknown"]
#: Every network class, in the order estimates list them.
NETWORKS: Final[tuple[Network, ...]] = ("mci", "other", "unknown")
#: Carrier names (``name_for_number(..., "en")``) of MCI's ranges.
MCI_CARRIERS: Final = frozenset({"IR-MCI", "MCI"})

_BY_PREFIX: dict[str, Network] = {}


def network_of(number: str) -> Network:
    """
    The network class of an Iranian mobile number in any spelling (``+989121234567``, ``09351234567``).

    :raises InvalidPhoneNumber: if it is not an Iranian mobile number.
    """
    national = to_national_mobile(number)
    prefix = national[: _prefix_length()]
    try:
        return _BY_PREFIX[prefix]
    except KeyError:
        import phonenumbers
        from phonenumbers import carrier

        parsed = phonenumbers.PhoneNumber(country_code=IRAN_COUNTRY_CODE, national_number=int(national))
        # The number is a valid mobile already: the look-up is then the prefix table alone.
        name = carrier.name_for_valid_number(parsed, "en")
        network: Network = "mci" if name in MCI_CARRIERS else "other" if name else "unknown"
        _BY_PREFIX[prefix] = network
        return network


@cache
def _prefix_length() -> int:
    """How many national digits the carrier table's longest Iranian prefix covers (10 when unknown)."""
    try:
        from phonenumbers.carrierdata import CARRIER_DATA
    except ImportError:
        return 10
    country = str(IRAN_COUNTRY_CODE)
    lengths = [len(prefix) - len(country) for prefix in CARRIER_DATA if prefix.startswith(country)]
    return max(lengths) if lengths else 10
