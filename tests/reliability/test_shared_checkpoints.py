"""Resume state on a worker's local disk is unsafe when a retry can run on another machine.

Without the task state store (Airflow before 3.3), the operator keeps its ledger under an
``ObjectStoragePath``. With an executor other than LocalExecutor and no shared location set, it fails
before sending anything, saying what to set.
"""

from __future__ import annotations

import pytest

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from tests.reliability.support import people, task_context


def operator(**kwargs: object) -> P2PSmsOperator:
    return P2PSmsOperator(
        task_id="send", sms_conn_id="bitel_default", recipients=people(3), message="Hi {{ row.name }}", **kwargs
    )


@pytest.mark.parametrize("executor", ["CeleryExecutor", "LocalExecutor,KubernetesExecutor"])
def test_a_remote_executor_without_shared_checkpoints_fails_before_sending(connect, monkeypatch, executor):
    sandbox = connect()
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    with pytest.raises(SmsConfigurationError) as caught:
        operator().execute(task_context())  # no task state store: Airflow before 3.3
    message = str(caught.value)
    assert "may run on another machine" in message
    assert "set checkpoint_path on the task, or [p2psms] checkpoint_path" in message
    assert sandbox.messages() == []


def test_a_shared_checkpoint_path_or_the_task_state_store_lets_it_send(connect, monkeypatch, tmp_path):
    from tests.reliability.support import MemoryTaskState

    sandbox = connect()
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    assert operator(checkpoint_path=f"file://{tmp_path}").execute(task_context())["counts"]["sent"] == 3
    assert operator().execute(task_context(MemoryTaskState()))["counts"]["sent"] == 3
    assert len(sandbox.messages()) == 6  # two task instances' worth: the two stores share nothing


def test_the_local_executor_may_keep_checkpoints_on_local_disk(connect, monkeypatch):
    sandbox = connect()
    monkeypatch.delenv("AIRFLOW__P2PSMS__CHECKPOINT_PATH", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert operator().execute(task_context())["counts"]["sent"] == 3
    assert len(sandbox.messages()) == 3
