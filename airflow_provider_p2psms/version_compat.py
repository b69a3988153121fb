"""Every import that differs between the supported Airflow versions lives here, and only here."""

from __future__ import annotations

from airflow import __version__ as _AIRFLOW_VERSION


def _version_tuple(version: str) -> tuple[int, int, int]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


AIRFLOW_VERSION: tuple[int, int, int] = _version_tuple(_AIRFLOW_VERSION)
AIRFLOW_V_3_2_PLUS: bool = AIRFLOW_VERSION >= (3, 2, 0)
AIRFLOW_V_3_3_PLUS: bool = AIRFLOW_VERSION >= (3, 3, 0)

__all__ = ["AIRFLOW_VERSION", "AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS"]

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )
else:
    from airflow.configuration import conf  # type: ignore[assignment]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
    )

__all__ += ["AirflowException", "AirflowFailException", "AirflowSensorTimeout", "AirflowSkipException", "conf"]
