"""What a run does with its rendered template fields: flags typed after rendering, personal data kept out of the UI.

Real ``airflow dags test`` runs against the sandbox; the rendered fields are read back from the
metadata DB table the UI's "Rendered Template" view shows (``rendered_task_instance_fields``).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration


def test_a_templated_dry_run_is_read_after_rendering(run_dag, sandbox):
    """``dry_run="{{ params.dry }}"`` renders to the string "False": that must send, not dry-run."""
    result = run_dag(
        """
        flags = {"sends": "{{ params.off }}", "dry": "{{ params.on }}", "garbled": "{{ params.bad }}"}
        for task_id, flag in flags.items():
            P2PSmsOperator(
                task_id=task_id,
                sms_conn_id="bitel_default",
                recipients=["0912 123 4567"] if task_id == "sends" else ["0935 123 4567"],
                message="Hello from " + task_id,
                dry_run=flag,
            )
        """,
        connection_env(sandbox),
        dag_kwargs=", params={'off': False, 'on': 'yes', 'bad': 'maybe'}",
    )
    assert (result.state("sends"), result.state("dry"), result.state("garbled")) == ("success", "success", "failed")
    assert [(m["recipient"], m["text"]) for m in sandbox.messages()] == [("09121234567", "Hello from sends")]
    assert result.xcom("sends")["counts"]["sent"] == 1
    assert result.xcom("dry")["counts"]["dry_run"] == 1
    assert "dry_run must be true or false (True/False, true/false, 1/0, yes/no), not 'maybe'" in result.output


def test_a_native_dry_run_flag_works_with_native_rendering(run_dag, sandbox):
    result = run_dag(
        """
        P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=["0912 123 4567"],
            message="Hello",
            dry_run="{{ params.dry }}",
        )
        """,
        connection_env(sandbox),
        dag_kwargs=", params={'dry': False}, render_template_as_native_obj=True",
    )
    assert result.state("send") == "success", result.output[-3000:]
    assert len(sandbox.messages()) == 1


def test_an_untemplated_bad_flag_fails_when_the_dag_is_parsed():
    from airflow_provider_p2psms.exceptions import SmsConfigurationError
    from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator

    with pytest.raises(SmsConfigurationError, match=r"dry_run must be true or false .*not 'no way'"):
        P2PSmsOperator(task_id="t", sms_conn_id="bitel_default", recipients=[], message="hi", dry_run="no way")


def test_the_rendered_fields_view_shows_no_number_or_row_value(run_dag, sandbox):
    result = run_dag(
        """
        @task
        def extract():
            return [
                {"phone": "0912 123 4567", "name": "Nazanin Tehrani"},
                {"phone": "+98 935 765 4321", "name": "Reza Karimi"},
            ]

        send = P2PSmsOperator(
            task_id="send",
            sms_conn_id="bitel_default",
            recipients=extract(),
            message="Salam {{ row.name }}",
        )
        P2PSmsDeliverySensor(task_id="wait", receipt=send.output, poke_interval=0.2, timeout=60)
        """,
        {**connection_env(sandbox)},
    )
    assert result.state("send") == "success", result.output[-3000:]
    assert len(sandbox.messages()) == 2
    stored = json.dumps([result.rendered("send"), result.rendered("wait")], ensure_ascii=False)
    for personal in ("Nazanin", "Reza", "1234567", "7654321", "09121234567", "09357654321"):
        assert personal not in stored, stored
    assert result.rendered("send")["recipients"] == "2 recipients (not shown)"
    assert result.rendered("wait")["receipt"] == "send receipt of 2 messages (not shown)"


def test_the_notifier_texts_a_number_once_whatever_its_spelling_and_cuts_a_long_text(run_dag, sandbox):
    result = run_dag(
        """
        from airflow_provider_p2psms.notifications.p2p_sms import P2PSmsNotifier

        @task(
            on_failure_callback=P2PSmsNotifier(
                sms_conn_id="bitel_default",
                phone_numbers=["0912 123 4567", "+989121234567", "00989121234567"],
                message="{{ ti.task_id }} failed: " + "x" * 400,
                max_parts=1,
            )
        )
        def breaks():
            raise ValueError("boom")

        breaks()
        """,
        connection_env(sandbox),
    )
    assert result.state("breaks") == "failed"
    messages = sandbox.messages()
    assert [m["recipient"] for m in messages] == ["09121234567"]
    text = messages[0]["text"]
    assert text.startswith("breaks failed: xxx") and text.endswith("…")
    assert len(text) == 70  # one UCS-2 part: the marker is not in the GSM-7 alphabet
    assert "SMS notification: the text needs 3 SMS parts; cut to 1 parts (max_parts=1)" in result.output
