"""Quiet hours that close during a send, on a real Airflow 3 against the sandbox.

The window is computed by an upstream task when the run starts: it closes a few seconds later, while the
send is still going (the sandbox answers each request after 300 ms, one request at a time), and opens again
some seconds after that. The sandbox's own acceptance times prove that nothing left while it was closed,
and its message list that every recipient got exactly one text.
"""

from __future__ import annotations

from collections import Counter

import pendulum
import pytest

from tests.helpers import connection_env

pytestmark = pytest.mark.integration

RECIPIENTS = 3000
CLOSES_AFTER, OPENS_AFTER = 4, 16

BODY = f"""
@task
def window():
    now = pendulum.now("Asia/Tehran")
    # Opens at +{OPENS_AFTER} s and closes at +{CLOSES_AFTER} s: a window spanning midnight, open now.
    bounds = [now.add(seconds={OPENS_AFTER}).format("HH:mm:ss"), now.add(seconds={CLOSES_AFTER}).format("HH:mm:ss")]
    return {{"bounds": bounds, "closes": now.add(seconds={CLOSES_AFTER}).timestamp(),
             "opens": now.add(seconds={OPENS_AFTER}).timestamp()}}

send = P2PSmsOperator(
    task_id="send",
    sms_conn_id="bitel_default",
    recipients=[f"0912{{2 * i + 1:07d}}" for i in range({RECIPIENTS})],  # odd: none ends in 00666
    message="Your code is 42",
    send_window=("{{{{ ti.xcom_pull('window')['bounds'][0] }}}}", "{{{{ ti.xcom_pull('window')['bounds'][1] }}}}"),
    timezone="Asia/Tehran",
    max_concurrency=1,
)
window() >> send
"""


def test_a_window_closing_mid_send_pauses_and_resumes_without_duplicates(run_dag, sandbox) -> None:
    sandbox.configure(latency_ms=300)
    result = run_dag(BODY, connection_env(sandbox), timeout=300)
    assert result.returncode == 0 and result.state("send") == "success", result.output[-4000:]
    assert "closed during the send" in result.output
    assert "Pausing task as DEFERRED" in result.output

    marks = result.xcom("window")
    messages = sandbox.messages()
    counts = Counter(message["recipient"] for message in messages)
    missing = {f"0912{2 * i + 1:07d}" for i in range(RECIPIENTS)} - set(counts)
    assert len(counts) == RECIPIENTS and set(counts.values()) == {1}, (
        sorted(missing)[:5],
        [number for number, seen in counts.items() if seen > 1][:5],
        result.xcom("send")["counts"],
        result.xcom("send")["problems"][:5],
    )
    accepted = [message["accepted_at"] for message in messages]
    before = [at for at in accepted if at < marks["closes"]]
    # A request handed out just before the close is answered after it: allow one request's latency.
    during = [at for at in accepted if marks["closes"] + 1.0 <= at < marks["opens"]]
    after = [at for at in accepted if at >= marks["opens"]]
    assert before and after and not during, (len(before), len(during), len(after))
    assert len(before) + len(after) + sum(1 for at in accepted if marks["closes"] <= at < marks["closes"] + 1) == (
        RECIPIENTS
    )

    receipt = result.xcom("send")
    assert receipt["counts"]["sent"] == RECIPIENTS
    # What went out before the close is accounted for as accepted earlier, not sent again.
    assert 0 < receipt["counts"]["resumed"] < RECIPIENTS
    assert pendulum.from_timestamp(min(after)) >= pendulum.from_timestamp(marks["opens"])
