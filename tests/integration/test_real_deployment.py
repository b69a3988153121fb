"""A real Airflow deployment: scheduler, DAG processor, triggerer and API server, not ``dags test``.

``airflow dags test`` runs triggers inline; here the deferrable sensor's trigger runs in a real
triggerer process, which reads the connection through its supervisor, and the tasks run through the
scheduler's executor, with retries, as they would in production.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import connection_env
from tests.integration.deployment import query, run_to_the_end, standalone

pytestmark = pytest.mark.integration

DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sensors.p2p_sms import P2PSmsDeliverySensor

with DAG(dag_id="real_deployment", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    @task
    def extract():
        return [{"phone": "0912 123 4567", "name": "نازنین"}, {"phone": "09351234567", "name": "Reza"}]

    send = P2PSmsOperator(
        task_id="send", sms_conn_id="ippanel_default", recipients=extract(), message="سلام {{ row.name }}"
    )
    P2PSmsDeliverySensor(task_id="wait", receipt=send.output, deferrable=True, poke_interval=1, timeout=120)
"""


def test_deferrable_sensor_in_a_real_triggerer(tmp_path, sandbox, own_checkpoint_folder):
    with standalone(tmp_path, "real_deployment", DAG, connection_env(sandbox)) as deployment:
        db = deployment.db
        state, states = run_to_the_end(deployment, "real_deployment", timeout=300)
        assert state == "success", (states, deployment.log_tail())
        assert states == {"extract": "success", "send": "success", "wait": "success"}
        assert query(db, "SELECT COUNT(*) FROM trigger")[0][0] == 0  # the trigger ran and was cleaned up
        report = json.loads(
            query(db, "SELECT value FROM xcom WHERE dag_id = 'real_deployment' AND task_id = 'wait'")[0][0]
        )
        assert report["counts"]["delivered"] == 2
        assert sorted(m["recipient"] for m in sandbox.messages()) == ["+989121234567", "+989351234567"]
        logs = deployment.task_logs()
        assert "Delivery so far: 2 messages" in logs  # written by the trigger, in the triggerer
        # The send task's resume checkpoint is gone: the operator's success callback ran in the worker
        # (task state store rows on Airflow 3.3+, files under [p2psms] checkpoint_path before).
        assert query(db, "SELECT task_id, key FROM task_state_store WHERE dag_id = 'real_deployment'") == []
        assert list(own_checkpoint_folder.rglob("*.json")) == []
