"""Secrets and personal data: the API token and full phone numbers stay out of logs, errors and XCom.

The DAG test searches everything a real task run leaves behind (its output, XComs, rendered template
fields, the sandbox's request bodies) for tokens that exist nowhere else, on success and on failure.
"""

from __future__ import annotations

import json
import secrets
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_p2psms.exceptions import (
    SmsAuthenticationError,
    SmsConfigurationError,
    SmsRequestRejected,
    SmsUncertainSendError,
)
from airflow_provider_p2psms.hooks.factory import get_sms_hook
from airflow_provider_p2psms.models import OutgoingSms
from tests.helpers import GATEWAYS
from tests.reliability.support import gateway_conn_env, people, phone, sqlite_conn_env, write_people_db

if TYPE_CHECKING:
    from airflow_provider_p2psms.sandbox import SandboxServer


def token() -> str:
    return f"tok-{secrets.token_hex(12)}"


def use(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# --------------------------------------------------------------------------- TLS verification


@pytest.mark.parametrize("gateway", GATEWAYS)
@pytest.mark.parametrize(
    ("extra", "verify"),
    [
        ({}, True),
        ({"verify_ssl": ""}, True),
        ({"verify_ssl": True}, True),
        ({"verify_ssl": "true"}, True),
        ({"verify_ssl": False}, False),
        ({"verify_ssl": "false"}, False),
        ({"verify_ssl": "False"}, False),
        ({"verify_ssl": "0"}, False),
        ({"verify_ssl": "no"}, False),
    ],
)
def test_tls_verification_is_on_unless_the_connection_turns_it_off(sandbox, monkeypatch, gateway, extra, verify):
    use(monkeypatch, gateway_conn_env("sms", gateway, sandbox, token(), **extra))
    hook = get_sms_hook("sms")
    # On: True, or the CA bundle that REQUESTS_CA_BUNDLE names.
    assert (hook.session.verify is not False) is verify


def test_an_unreadable_verify_ssl_is_an_error_not_a_silent_off(sandbox, monkeypatch):
    use(monkeypatch, gateway_conn_env("sms", "bitel", sandbox, token(), verify_ssl="maybe"))
    with pytest.raises(SmsConfigurationError, match="extra 'verify_ssl' is 'maybe', expected true or false"):
        get_sms_hook("sms")


# --------------------------------------------------------------------------- errors and reprs


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_errors_and_reprs_never_carry_the_token(sandbox, monkeypatch, gateway):
    good, wrong = token(), token()
    sandbox.configure(bitel_tokens=[good], ippanel_tokens=[good], retry_after_seconds=0.01)
    batch = [OutgoingSms(phone(1) if gateway == "bitel" else f"+98{phone(1)[1:]}", "hi")]
    texts: list[str] = []

    use(monkeypatch, gateway_conn_env("sms", gateway, sandbox, wrong))
    hook = get_sms_hook("sms")
    texts += [repr(hook.settings), str(hook.settings)]
    with pytest.raises(SmsAuthenticationError) as refused:
        hook.send_batch(batch)
    texts.append(str(refused.value))
    assert "connection 'sms'" in texts[-1] and "(HTTP 401)" in texts[-1]

    use(monkeypatch, gateway_conn_env("sms", gateway, sandbox, good, sender="+98999111", timeout=0.05))
    hook = get_sms_hook("sms")
    with pytest.raises(SmsRequestRejected) as rejected:
        hook.send_batch(batch)
    texts.append(str(rejected.value))
    assert rejected.value.http_status in (400, 422)

    use(monkeypatch, gateway_conn_env("sms", gateway, sandbox, good, timeout=0.05))
    sandbox.configure(latency_ms=200)
    hook = get_sms_hook("sms")
    with pytest.raises(SmsUncertainSendError) as uncertain:
        hook.send_batch(batch)
    texts.append(str(uncertain.value))

    for text in texts:
        assert good not in text and wrong not in text, text
    assert all(good not in entry["body"] and wrong not in entry["body"] for entry in sandbox.requests())


# --------------------------------------------------------------------------- a real Airflow

SECRETS_DAG = """
send = P2PSmsOperator(
    task_id="send_ok",
    sms_conn_id="bitel_default",
    sql="SELECT phone, name, code FROM people ORDER BY rowid",
    sql_conn_id="recipients_db",
    message="Hi {{ row.name }}, your code is {{ row.code }}",
)
P2PSmsDeliverySensor(task_id="wait", receipt=send.output, poke_interval=0.3, timeout=60, min_delivered_ratio=0.8)
P2PSmsDeliverySensor(task_id="wait_strict", receipt=send.output, poke_interval=0.3, timeout=60)
P2PSmsOperator(
    task_id="send_401",
    sms_conn_id="bitel_wrong_token",
    sql="SELECT phone, name, code FROM people ORDER BY rowid",
    sql_conn_id="recipients_db",
    message="Hi {{ row.name }}",
)
P2PSmsOperator(
    task_id="send_422",
    sms_conn_id="ippanel_bad_sender",
    sql="SELECT phone, name, code FROM people ORDER BY rowid",
    sql_conn_id="recipients_db",
    message="Hi {{ row.name }}",
)
"""


def dag_leftovers(result: Any, sandbox: SandboxServer, task_ids: tuple[str, ...]) -> dict[str, str]:
    """Everything a run leaves that a person may read, by where it is."""
    found = {"output": result.output}
    for task_id in task_ids:
        found[f"xcom {task_id}"] = json.dumps(result.xcom(task_id), ensure_ascii=False)
        found[f"rendered {task_id}"] = json.dumps(result.rendered(task_id), ensure_ascii=False)
    found["request bodies"] = "\n".join(entry["body"] for entry in sandbox.requests())
    return found


@pytest.mark.integration
def test_no_token_or_full_number_leaks_from_real_task_runs(run_dag, sandbox, tmp_path):
    bitel_token, wrong_token, ippanel_token = token(), token(), token()
    sandbox.configure(bitel_tokens=[bitel_token], ippanel_tokens=[ippanel_token], delivery_seconds=0.3)
    rows = people(12)
    rows[0]["name"] = "{{ conn.bitel_default.password }}"
    rows[1]["name"] = "{{ ti.xcom_pull(task_ids='x') }}{% raw %}"
    # Spelled as users do; the sandbox blacklists numbers ending in 0002 and rejects those ending in 0003.
    rows[2]["phone"] = "+98 912 100 0002"
    rows[3]["phone"] = "۰۹۱۲۱۰۰۰۰۰۳"
    rows[4]["phone"] = "02112345678"
    database = write_people_db(tmp_path / "recipients.db", rows)
    env = {
        **gateway_conn_env("bitel_default", "bitel", sandbox, bitel_token, retry_backoff=0.01),
        **gateway_conn_env("bitel_wrong_token", "bitel", sandbox, wrong_token, retry_backoff=0.01),
        **gateway_conn_env("ippanel_bad_sender", "ippanel", sandbox, ippanel_token, sender="+98999111"),
        **sqlite_conn_env("recipients_db", database),
    }
    result = run_dag(textwrap.dedent(SECRETS_DAG), env)

    task_ids = ("send_ok", "wait", "wait_strict", "send_401", "send_422")
    states = {task_id: result.state(task_id) for task_id in task_ids}
    assert states == {
        "send_ok": "success",
        "wait": "success",
        "wait_strict": "failed",
        "send_401": "failed",
        "send_422": "failed",
    }, result.output[-4000:]
    assert "SmsAuthenticationError: Bitel refused the API token of connection 'bitel_wrong_token' (HTTP 401)" in (
        result.output
    )
    assert "SmsRequestRejected: IPPanel rejected the request (422, 400-2): from_number" in result.output

    # Row values are data: the sandbox got the template text literally.
    texts = {m["recipient"]: m["text"] for m in sandbox.messages()}
    assert texts[phone(0)] == "Hi {{ conn.bitel_default.password }}, your code is C00000"
    assert texts[phone(1)] == "Hi {{ ti.xcom_pull(task_ids='x') }}{% raw %}, your code is C00001"
    assert len(texts) == 11
    assert all(entry["auth_ok"] for entry in sandbox.requests() if entry["kind"] == "send" and entry["status"] == 200)

    leftovers = dag_leftovers(result, sandbox, task_ids)
    for secret in (bitel_token, wrong_token, ippanel_token):
        assert [where for where, text in leftovers.items() if secret in text] == []

    # Full numbers, in every spelling they had, never reach the logs; masked ones do.
    spellings = {row["phone"] for row in rows} | set(texts) | {f"+98{number[1:]}" for number in texts}
    spellings |= {number[1:] for number in texts}
    assert [number for number in sorted(spellings) if number in result.output] == []
    assert "Row 5: field 'phone' 0211*****78 is a landline" in result.output
    assert "Not delivered: 0912*****02 (blacklisted), 0912*****03 (rejected)." in result.output
    report = result.xcom("wait")
    assert sorted(masked for _, masked, _ in report["messages"]) == sorted(
        f"{number[:4]}*****{number[-2:]}" for number in texts
    )
