"""The README's TaskFlow example: a ``@task`` that bulk-sends with ``hook.send_rows``, on a real Airflow 3."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

#: The example as the README shows it.
EXAMPLE = """
from airflow.sdk import dag, task


@dag(schedule=None, catchup=False)
def taskflow_bulk_send():
    @task
    def send_codes() -> dict:
        from airflow_provider_p2psms.hooks.factory import get_sms_hook

        hook = get_sms_hook("bitel_default")
        customers = [{"phone": f"0912{1000000 + n:07d}", "name": f"user{n}", "code": f"C{n:05d}"} for n in range(250)]
        sent = uncertain = rejected = 0
        for batch in hook.send_rows(customers, "Hi {{ row.name }}, your code is {{ row.code }}"):
            if batch.accepted:
                sent += len(batch.receipts)
            elif batch.rejected:
                rejected += len(batch.messages)
            else:
                uncertain += len(batch.messages)
        return {"sent": sent, "uncertain": uncertain, "rejected": rejected}

    send_codes()


taskflow_bulk_send()
"""

#: The body of the example's DAG function, word for word: the task and its call.
TASK_CODE = textwrap.dedent(EXAMPLE.split("def taskflow_bulk_send():\n", 1)[1].split("\n\n\ntaskflow_bulk_send()")[0])


def test_the_example_dag_builds_with_its_one_task():
    namespace: dict[str, object] = {}
    exec(compile(EXAMPLE, "taskflow_bulk_send.py", "exec"), namespace)

    built = namespace["taskflow_bulk_send"]()  # type: ignore[operator]
    assert built.dag_id == "taskflow_bulk_send"
    assert built.task_ids == ["send_codes"]
    assert TASK_CODE.startswith("@task\ndef send_codes() -> dict:\n")
    assert TASK_CODE.rstrip().endswith("\nsend_codes()")


def test_the_taskflow_example_sends_every_code_once_and_returns_its_counts(run_dag, sandbox):
    result = run_dag(TASK_CODE, connection_env(sandbox))

    assert result.returncode == 0, result.output[-3000:]
    assert result.state("send_codes") == "success"
    assert result.xcom("send_codes") == {"sent": 250, "uncertain": 0, "rejected": 0}

    received = sorted((m["provider"], m["recipient"], m["text"]) for m in sandbox.messages())
    assert received == sorted(
        ("bitel", f"0912{1000000 + n:07d}", f"Hi user{n}, your code is C{n:05d}") for n in range(250)
    )
    assert len({text for _, _, text in received}) == 250
    # Three requests of at most 100 messages (the batch size), none resent.
    assert [r["status"] for r in sandbox.requests() if r["kind"] == "send"] == [200, 200, 200]
    assert sorted(Counter(m["request_seq"] for m in sandbox.messages()).values()) == [50, 100, 100]
