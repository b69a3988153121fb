"""Helpers the tests share (fixtures live in ``conftest.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.sandbox import (
    DEFAULT_BITEL_GATEWAY,
    DEFAULT_BITEL_TOKEN,
    DEFAULT_IPPANEL_KEY,
    DEFAULT_IPPANEL_SENDER,
)

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox import SandboxServer

GATEWAYS = ("bitel", "ippanel")


def connection_env(server: SandboxServer, **extra: Any) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables, as a user would write them, for both gateways on ``server``."""
    bitel_extra = {"sender": DEFAULT_BITEL_GATEWAY, "retry_backoff": 0.05, **extra}
    ippanel_extra = {"sender": DEFAULT_IPPANEL_SENDER, "retry_backoff": 0.05, **extra}
    return {
        "AIRFLOW_CONN_BITEL_DEFAULT": json.dumps(
            {"conn_type": "bitel", "password": DEFAULT_BITEL_TOKEN, "host": server.url, "extra": bitel_extra}
        ),
        "AIRFLOW_CONN_IPPANEL_DEFAULT": json.dumps(
            {
                "conn_type": "ippanel",
                "password": DEFAULT_IPPANEL_KEY,
                "host": server.ippanel_url,
                "extra": ippanel_extra,
            }
        ),
    }


def _needs_dags_test_retries() -> Any:
    import pytest

    from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_2_PLUS

    return pytest.mark.skipif(
        not AIRFLOW_V_3_2_PLUS,
        reason="Airflow 3.1's dag.test() marks a task that is up for retry as failed (_run_task in "
        "airflow/sdk/definitions/dag.py), so 'airflow dags test' cannot run retries there; the resume "
        "logic runs on 3.1 in the in-process ledger tests",
    )


#: For tests that need 'airflow dags test' to run a task's retries.
needs_dags_test_retries = _needs_dags_test_retries()
