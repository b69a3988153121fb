"""Bad input: every case ends in a clear message or a reported skip, never a bare traceback.

Table-driven in-process tests cover numbers, texts and sources through ``MessageBuilder`` and
``iter_rows``; operator-level tests check that nothing is sent when the input is unusable; one DAG
run checks the task states and logs on a real Airflow.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from airflow_provider_p2psms.campaign.recipients import MessageBuilder, iter_rows
from airflow_provider_p2psms.exceptions import P2PSmsError, SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.hooks.bitel import BitelHook
from airflow_provider_p2psms.hooks.ippanel import IPPanelHook
from airflow_provider_p2psms.operators.p2p_sms import P2PSmsOperator
from airflow_provider_p2psms.sandbox import DEFAULT_BITEL_TOKEN
from airflow_provider_p2psms.version_compat import AirflowFailException, AirflowSkipException
from tests.reliability.support import (
    MemoryTaskState,
    gateway_conn_env,
    people,
    phone,
    sent_counts,
    sqlite_conn_env,
    task_context,
    write_people_db,
)

if TYPE_CHECKING:
    from pathlib import Path

MESSAGE = "Hi {{ row.name }}, your code is {{ row.code }}"
PERSIAN = "س"  # one UCS-2 unit


def builder(template: str = "Hi {{ row.name }}", *, gateway: type = BitelHook, **kwargs: Any) -> MessageBuilder:
    env = SandboxedEnvironment(undefined=StrictUndefined)
    arguments: dict[str, Any] = {"phone_field": "phone", "max_parts": 8, "fail_on_invalid": False}
    return MessageBuilder(
        template=env.from_string(template),
        context={"ds": "2026-01-01"},
        normalize=gateway().normalize_number,
        **{**arguments, **kwargs},
    )


def build_one(row: Any, template: str = "Hi {{ row.name }}", **kwargs: Any) -> tuple[list[Any], list[str]]:
    """The messages and problems of one row."""
    made = builder(template, **kwargs)
    messages = [message for _, message in made.build([row])]
    return messages, made.problems


# --------------------------------------------------------------------------- phone numbers

VALID_SPELLINGS = [
    "09121234567",
    "9121234567",
    "+989121234567",
    "00989121234567",
    "989121234567",
    "0912 123 4567",
    "0912-123-4567",
    "(0912) 123 4567",
    "+98 (912) 123-45-67",
    " 0912 123 4567\u200c",
    "۰۹۱۲۱۲۳۴۵۶۷",
    "۰۹۱۲ ۱۲۳ ۴۵۶۷",
    "٠٩١٢١٢٣٤٥٦٧",
    "+۹۸۹۱۲۱۲۳۴۵۶۷",
    9121234567,
    9121234567.0,
]


@pytest.mark.parametrize(("gateway", "expected"), [(BitelHook, "09121234567"), (IPPanelHook, "+989121234567")])
@pytest.mark.parametrize("value", VALID_SPELLINGS)
def test_every_common_spelling_of_a_mobile_number_is_normalized(value, gateway, expected):
    messages, problems = build_one({"phone": value, "name": "Sara"}, gateway=gateway)
    assert problems == []
    assert [(m.recipient, m.text) for m in messages] == [(expected, "Hi Sara")]


INVALID_NUMBERS = [
    (None, "<none>", "the phone number is missing (None)"),
    ("", "<empty>", "the phone number is empty"),
    ("  - ", "<empty>", "the phone number is empty"),
    (True, "True", "a boolean is not a phone number"),
    (9121234567.5, "9121******.5", "a number with a fraction is not a phone number"),
    ("02112345678", "0211*****78", "is a landline"),
    ("0098 21 1234 5678", "0098********78", "is a landline"),
    ("+14155552671", "+141******71", "is a foreign number (country code +1)"),
    ("+44 7911 123456", "+447*******56", "is a foreign number (country code +44)"),
    ("0912123", "0*****3", "is not a valid Iranian mobile number"),
    ("091212345678", "0912******78", "is not a valid Iranian mobile number"),
    ("0912123456789012", "0912**********12", "is not a"),
    ("0912abc4567", "0912*****67", "contains characters that are not digits"),
    ([9121234567], "[912******7]", "expected a string or a number, got list"),
]


@pytest.mark.parametrize(("value", "masked", "reason"), INVALID_NUMBERS)
def test_an_invalid_number_is_skipped_and_reported_masked(value, masked, reason):
    messages, problems = build_one({"phone": value, "name": "Sara"})
    assert messages == []
    assert len(problems) == 1
    assert problems[0].startswith(f"Row 1: field 'phone' {masked} {reason}")
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    if len(digits) >= 9:
        assert digits not in problems[0], "the full number leaked into the report"


def test_on_invalid_fail_raises_at_the_first_invalid_row_naming_it():
    made = builder(fail_on_invalid=True)
    rows = [{"phone": phone(1), "name": "a"}, {"phone": "02112345678", "name": "b"}]
    with pytest.raises(SmsInputError, match=r"Row 2: field 'phone' 0211\*\*\*\*\*78 is a landline.*nothing was sent"):
        list(made.build(rows))


# --------------------------------------------------------------------------- texts

TEXTS = [
    # (text, max_parts, parts needed or None if it fits)
    ("a" * 160, 1, None),
    ("a" * 161, 1, "needs 2 SMS parts (161 characters, GSM-7); max_parts is 1"),
    ("a" * 306, 2, None),
    ("a" * 307, 2, "needs 3 SMS parts (307 characters, GSM-7); max_parts is 2"),
    ("{" * 80, 1, None),
    ("{" * 81, 1, "needs 2 SMS parts (81 characters, GSM-7)"),
    (PERSIAN * 70, 1, None),
    (PERSIAN * 71, 1, "needs 2 SMS parts (71 characters, UCS-2); max_parts is 1"),
    (PERSIAN * 134, 2, None),
    (PERSIAN * 135, 2, "needs 3 SMS parts (135 characters, UCS-2); max_parts is 2"),
    ("a" * 69 + PERSIAN, 1, None),
    ("a" * 70 + PERSIAN, 1, "needs 2 SMS parts (71 characters, UCS-2)"),
    ("\U0001f600" * 35, 1, None),
    ("\U0001f600" * 36, 1, "needs 2 SMS parts (36 characters, UCS-2)"),
    (PERSIAN * 67 * 8, 8, None),
    (PERSIAN * (67 * 8 + 1), 8, "needs 9 SMS parts"),
]


@pytest.mark.parametrize(("text", "max_parts", "problem"), TEXTS)
def test_texts_longer_than_max_parts_are_invalid_rows(text, max_parts, problem):
    messages, problems = build_one({"phone": phone(1), "text": text}, "{{ row.text }}", max_parts=max_parts)
    if problem is None:
        assert [m.text for m in messages] == [text]
        assert problems == []
    else:
        assert messages == []
        assert len(problems) == 1
        assert problems[0].startswith("Row 1: the message ")
        assert problem in problems[0]


@pytest.mark.parametrize("name", ["", "   ", "\n\t ", None])
def test_a_text_that_renders_empty_is_an_invalid_row(name):
    template = "{{ row.name if row.name else '' }}"
    messages, problems = build_one({"phone": phone(1), "name": name}, template)
    assert messages == []
    assert problems == ["Row 1: the message rendered empty."]


def test_row_values_are_data_never_templates():
    value = "{{ conn.bitel_default.password }} {% for x in range(3) %}x{% endfor %}"
    messages, problems = build_one({"phone": phone(1), "name": value})
    assert problems == []
    assert [m.text for m in messages] == [f"Hi {value}"]


def test_each_row_renders_on_its_own_with_the_context_and_jinja_globals():
    """A row never sees what an earlier row set, nor its fields; ``ds`` and ``range`` are there for every row."""
    template = (
        "{% if row.name %}{% set greeting = 'Hi ' ~ row.name %}{% endif %}"
        "{{ greeting | default('Hello') }} {{ ds }} {{ range(2) | list | length }} {{ row.code | default('-') }}"
    )
    made = builder(template)
    rows = [
        {"phone": phone(1), "name": "Sara", "code": "C1"},
        {"phone": phone(2), "name": ""},
        {"phone": phone(3), "name": "Ali", "code": "C3"},
    ]
    texts = [message.text for _, message in made.build(rows)]
    assert texts == ["Hi Sara 2026-01-01 2 C1", "Hello 2026-01-01 2 -", "Hi Ali 2026-01-01 2 C3"]


def test_the_template_cannot_reach_connections():
    with pytest.raises(SmsInputError, match="Row 1: the message template uses an undefined value"):
        build_one({"phone": phone(1)}, "{{ conn.bitel_default.password }}")


def test_an_undefined_variable_names_the_row_and_its_fields_not_its_values():
    with pytest.raises(SmsInputError) as caught:
        build_one({"phone": phone(1), "name": "Sara"}, "Hi {{ row.nme }}")
    text = str(caught.value)
    assert text.startswith("Row 1: the message template uses an undefined value")
    assert "The row's fields are: phone, name." in text
    assert phone(1) not in text and "Sara" not in text


def test_duplicates_are_sent_once_and_counted():
    made = builder()
    rows = [
        {"phone": phone(1), "name": "a"},
        {"phone": f"+98{phone(1)[1:]}", "name": "a"},
        {"phone": phone(1), "name": "b"},
    ]
    messages = [message for _, message in made.build(rows)]
    assert [(m.recipient, m.text) for m in messages] == [(phone(1), "Hi a"), (phone(1), "Hi b")]
    assert (made.requested, made.duplicate, made.invalid) == (3, 1, 0)


# --------------------------------------------------------------------------- sources

ROW_SHAPES = [
    (["0912", "x"], "Row 1: is a list, not a row (mapping) or a phone number."),
    (None, "Row 1: is a NoneType, not a row (mapping) or a phone number."),
    ({"mobile": phone(1), "name": "a"}, "Row 1: has no field 'phone' (its fields: mobile, name); set phone_field"),
    ({}, "Row 1: has no field 'phone' (its fields: none)"),
]


@pytest.mark.parametrize(("row", "problem"), ROW_SHAPES)
def test_rows_of_the_wrong_shape_are_reported(row, problem):
    messages, problems = build_one(row)
    assert messages == []
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_bare_phone_numbers_are_rows_too():
    made = builder("Hello")
    messages = [m for _, m in made.build(iter_rows(**listed([phone(1), int(phone(2)), "02112345678"])))]
    assert [m.recipient for m in messages] == [phone(1), phone(2)]
    assert made.invalid == 1


def listed(recipients: Any) -> dict[str, Any]:
    return {"recipients": recipients, "sql": None, "sql_conn_id": None, "parameters": None, "fetch_size": 10}


NOT_A_LIST = [
    (42, "recipients must be a list of rows (dicts) or phone numbers, got int"),
    ("just text", "recipients is a string that is neither JSON nor a Python literal"),
    ("[{'phone': '0912'", "recipients is a string that is neither JSON nor a Python literal"),
    ("None", "recipients must be a list of rows (dicts) or phone numbers, got NoneType"),
    ({"rows": [{"phone": phone(1)}]}, "recipients is a mapping, not a list of rows"),
    ('{"rows": []}', "recipients is a mapping, not a list of rows"),
    (b"0912", "recipients must be a list of rows (dicts) or phone numbers, got bytes"),
]


@pytest.mark.parametrize(("recipients", "message"), NOT_A_LIST)
def test_recipients_that_are_not_a_list_fail_with_what_to_do(recipients, message):
    with pytest.raises(SmsInputError) as caught:
        list(iter_rows(**listed(recipients)))
    assert str(caught.value).startswith(message)


def test_rendered_xcom_strings_are_read_back():
    rows = iter_rows(**listed(str([{"phone": phone(1), "name": "a"}])))
    assert list(rows) == [{"phone": phone(1), "name": "a"}]


@pytest.fixture
def recipients_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    database = write_people_db(tmp_path / "recipients.db", people(1500))
    for name, value in sqlite_conn_env("recipients_db", database).items():
        monkeypatch.setenv(name, value)
    return database


def sql_rows(sql: str, fetch_size: int = 100) -> list[Any]:
    return list(
        iter_rows(recipients=None, sql=sql, sql_conn_id="recipients_db", parameters=None, fetch_size=fetch_size)
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT phone FROM nowhere", "no such table: nowhere"),
        ("SELEC phone FROM people", 'near "SELEC": syntax error'),
        ("SELECT phone FROM people WHERE code = :code", "Incorrect number of bindings"),
    ],
)
def test_a_failing_query_says_so_before_anything_is_read(recipients_db, sql, message):
    with pytest.raises(SmsInputError) as caught:
        sql_rows(sql)
    text = str(caught.value)
    assert text.startswith("The recipients query on connection 'recipients_db' failed: ")
    assert message in text
    assert text.endswith("Nothing was sent.")


def test_a_statement_without_rows_is_refused(recipients_db):
    with pytest.raises(SmsInputError, match="returned no result set; it must be a SELECT"):
        sql_rows("UPDATE people SET name = name WHERE 0")


def test_sql_conn_id_must_be_a_database(recipients_db, connect):
    connect()
    with pytest.raises(SmsConfigurationError, match="Connection 'bitel_default' \\(sql_conn_id\\) is not a SQL"):
        list(iter_rows(recipients=None, sql="SELECT 1", sql_conn_id="bitel_default", parameters=None, fetch_size=1))


def make_operator(**kwargs: Any) -> P2PSmsOperator:
    arguments: dict[str, Any] = {"task_id": "send", "sms_conn_id": "bitel_default", "message": MESSAGE}
    return P2PSmsOperator(**{**arguments, **kwargs})


def test_a_query_failing_mid_stream_is_retryable_and_the_retry_sends_the_rest(recipients_db, connect):
    """Rows stream while batches go out: a read error after some were sent must not claim nothing was."""
    sandbox = connect()
    state = MemoryTaskState()
    broken = "SELECT phone, name, code, CASE WHEN rowid = 1200 THEN json('not json') END AS oops FROM people"
    operator = make_operator(sql=broken, sql_conn_id="recipients_db", fetch_size=100, max_concurrency=1)
    with pytest.raises(P2PSmsError) as caught:
        operator.execute(task_context(state))
    assert not isinstance(caught.value, AirflowFailException), "a lost connection mid-stream deserves a retry"
    assert "failed after 1100 rows" in str(caught.value)
    assert "Nothing was sent" not in str(caught.value)
    # Every batch built from the rows read before the failure went out (11 whole batches of 100).
    assert len(sandbox.messages()) == 1100

    fixed = make_operator(sql="SELECT phone, name, code FROM people", sql_conn_id="recipients_db")
    receipt = fixed.execute(task_context(state, try_number=2))
    assert receipt["counts"] | {"sent": 1500, "resumed": 1100} == receipt["counts"]
    assert set(sent_counts(sandbox).values()) == {1}
    assert len(sent_counts(sandbox)) == 1500


@pytest.mark.parametrize("on_empty", ["skip", "succeed", "fail"])
def test_a_query_with_no_rows_follows_on_empty(recipients_db, connect, on_empty):
    sandbox = connect()
    operator = make_operator(sql="SELECT * FROM people WHERE 0", sql_conn_id="recipients_db", on_empty=on_empty)
    expected = "Nothing to send: 0 rows, 0 invalid, 0 duplicate."
    if on_empty == "skip":
        with pytest.raises(AirflowSkipException, match=expected):
            operator.execute(task_context(MemoryTaskState()))
    elif on_empty == "fail":
        with pytest.raises(SmsInputError, match=f"{expected} on_empty='fail'"):
            operator.execute(task_context(MemoryTaskState()))
    else:
        receipt = operator.execute(task_context(MemoryTaskState()))
        assert receipt["messages"] == ""
        assert receipt["counts"]["requested"] == 0
    assert sandbox.requests() == []


def test_only_invalid_rows_count_as_nothing_to_send(connect):
    connect()
    operator = make_operator(recipients=[{"phone": "02112345678", "name": "a", "code": "1"}], on_empty="fail")
    with pytest.raises(SmsInputError, match=r"Nothing to send: 1 rows, 1 invalid, 0 duplicate\. on_empty='fail'"):
        operator.execute(task_context(MemoryTaskState()))


# --------------------------------------------------------------------------- nothing sent when the input is bad


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Hi {{ row.name ", "The message template has a syntax error at line 1"),
        ("Hi {% if row.name %}{{ row.name }}", "The message template has a syntax error at line 1"),
        ("Hi {{ row.nme }}", "Row 1: the message template uses an undefined value"),
        ("Hi {{ nobody }}", "Row 1: the message template uses an undefined value ('nobody' is undefined)"),
        ("Hi {{ row.name | nosuchfilter }}", "No filter named 'nosuchfilter'"),
        ("Hi {{ 1 / 0 }}", "Row 1: rendering the message failed: ZeroDivisionError"),
    ],
)
def test_a_broken_template_sends_nothing(connect, message, error):
    sandbox = connect()
    operator = make_operator(recipients=people(300), message=message)
    with pytest.raises(SmsInputError) as caught:
        operator.execute(task_context(MemoryTaskState()))
    assert error in str(caught.value)
    assert sandbox.requests() == []


@pytest.mark.parametrize("bad_row", [{"phone": None}, {"phone": "02112345678"}, {"mobile": "0912"}, ["x"]])
def test_on_invalid_fail_sends_nothing_even_when_row_500_of_1000_is_the_bad_one(connect, bad_row):
    sandbox = connect()
    rows: list[Any] = people(1000)
    rows[499] = {**bad_row, "name": "x", "code": "y"} if isinstance(bad_row, dict) else bad_row
    operator = make_operator(recipients=rows, on_invalid="fail")
    with pytest.raises(SmsInputError, match=r"^Row 500: .*on_invalid='fail', so nothing was sent\.$"):
        operator.execute(task_context(MemoryTaskState()))
    assert sandbox.requests() == []


def test_on_invalid_fail_with_a_late_undefined_value_sends_nothing(connect):
    sandbox = connect()
    rows = people(1000)
    del rows[899]["code"]
    with pytest.raises(SmsInputError, match="Row 900: the message template uses an undefined value"):
        make_operator(recipients=rows, on_invalid="fail").execute(task_context(MemoryTaskState()))
    assert sandbox.requests() == []


def test_on_invalid_skip_sends_the_rest_and_reports_the_invalid_masked(connect):
    sandbox = connect()
    rows: list[Any] = people(1000)
    rows[499] = {"phone": "02112345678", "name": "x", "code": "y"}
    rows[500] = {"phone": "+14155552671", "name": "x", "code": "y"}
    rows[501] = {"phone": "۰۹۱۲۱۲۳۴۵۶۷", "name": "x", "code": "y"}
    receipt = make_operator(recipients=rows).execute(task_context(MemoryTaskState()))
    assert receipt["counts"] | {"requested": 1000, "sent": 998, "invalid": 2} == receipt["counts"]
    assert receipt["problems"] == [
        "Row 500: field 'phone' 0211*****78 is a landline; SMS needs a mobile number (09xx...).",
        "Row 501: field 'phone' +141******71 is a foreign number (country code +1); "
        "only Iranian mobile numbers (+98 9xx) can be texted.",
    ]
    assert "09121234567" in sent_counts(sandbox)


def test_a_dry_run_validates_everything_and_sends_nothing(connect):
    sandbox = connect()
    rows: list[Any] = [*people(10), {"phone": None, "name": "x", "code": "y"}, people(1)[0]]
    receipt = make_operator(recipients=rows, dry_run=True).execute(task_context(MemoryTaskState()))
    assert (
        receipt["counts"] | {"requested": 12, "dry_run": 10, "invalid": 1, "duplicate": 1, "sent": 0}
        == (receipt["counts"])
    )
    assert sandbox.requests() == []


# --------------------------------------------------------------------------- a real Airflow

BAD_INPUT_DAG = """
@task
def wrong_shape():
    return {"rows": [{"phone": "09121231000"}]}

common = dict(sms_conn_id="bitel_default", message=MESSAGE)
P2PSmsOperator(task_id="syntax", recipients=ROWS, **{**common, "message": "Hi {{ row.name "})
P2PSmsOperator(task_id="undefined", recipients=ROWS, **{**common, "message": "Hi {{ row.nme }}"})
P2PSmsOperator(task_id="not_a_list", recipients=wrong_shape(), **common)
P2PSmsOperator(task_id="sql_error", sql="SELECT * FROM nowhere", sql_conn_id="recipients_db", **common)
for on_empty in ("skip", "succeed", "fail"):
    P2PSmsOperator(
        task_id=f"empty_{on_empty}", sql=NO_ROWS, sql_conn_id="recipients_db", on_empty=on_empty, **common
    )
P2PSmsOperator(task_id="invalid_fail", sql=WITH_BAD_ROW_500, sql_conn_id="recipients_db", on_invalid="fail", **common)
P2PSmsOperator(task_id="invalid_skip", recipients=MIXED, **common)
"""


@pytest.mark.integration
def test_bad_input_on_a_real_airflow(run_dag, sandbox, tmp_path):
    database = write_people_db(tmp_path / "recipients.db", people(1000))
    mixed = [
        {"phone": "۰۹۱۲ ۱۲۳ ۴۵۶۷", "name": "Sara", "code": "A"},
        {"phone": "02112345678", "name": "Office", "code": "B"},
        {"phone": None, "name": "Nobody", "code": "C"},
        {"mobile": phone(7), "name": "Wrong field", "code": "D"},
    ]
    constants = {
        "MESSAGE": MESSAGE,
        "ROWS": people(5),
        "MIXED": mixed,
        "NO_ROWS": "SELECT phone, name, code FROM people WHERE 0",
        "WITH_BAD_ROW_500": "SELECT CASE WHEN rowid = 500 THEN '02112345678' ELSE phone END AS phone, name, code "
        "FROM people ORDER BY rowid",
    }
    body = "".join(f"{name} = {value!r}\n" for name, value in constants.items()) + textwrap.dedent(BAD_INPUT_DAG)
    env = {
        **sqlite_conn_env("recipients_db", database),
        **gateway_conn_env("bitel_default", "bitel", sandbox, DEFAULT_BITEL_TOKEN, retry_backoff=0.01),
    }
    result = run_dag(body, env)

    states = {
        task_id: result.state(task_id)
        for task_id in (
            "syntax",
            "undefined",
            "not_a_list",
            "sql_error",
            "empty_skip",
            "empty_succeed",
            "empty_fail",
            "invalid_fail",
            "invalid_skip",
        )
    }
    assert states == {
        "syntax": "failed",
        "undefined": "failed",
        "not_a_list": "failed",
        "sql_error": "failed",
        "empty_skip": "skipped",
        "empty_succeed": "success",
        "empty_fail": "failed",
        "invalid_fail": "failed",
        "invalid_skip": "success",
    }, result.output[-4000:]
    output = result.output
    for expected in (
        "SmsInputError: The message template has a syntax error at line 1: unexpected end of template",
        "SmsInputError: Row 1: the message template uses an undefined value ('dict object' has no attribute 'nme')",
        "SmsInputError: recipients is a mapping, not a list of rows.",
        "SmsInputError: The recipients query on connection 'recipients_db' failed: OperationalError: "
        "no such table: nowhere. Nothing was sent.",
        "Nothing to send: 0 rows, 0 invalid, 0 duplicate. Skipping (on_empty='skip').",
        "Nothing to send: 0 rows, 0 invalid, 0 duplicate. Succeeding (on_empty='succeed').",
        "SmsInputError: Nothing to send: 0 rows, 0 invalid, 0 duplicate. on_empty='fail'.",
        "SmsInputError: Row 500: field 'phone' 0211*****78 is a landline; SMS needs a mobile number (09xx...). "
        "on_invalid='fail', so nothing was sent.",
        "Row 2: field 'phone' 0211*****78 is a landline",
        "Row 3: field 'phone' <none> the phone number is missing (None).",
        "Row 4: has no field 'phone' (its fields: mobile, name, code); set phone_field to the right one.",
    ):
        assert expected in output, expected
    for bare in ("KeyError", "TypeError", "AttributeError", "IndexError", "UnboundLocalError", "jinja2.exceptions"):
        assert bare not in output, bare

    # Only the one valid row of invalid_skip went out.
    assert [(m["recipient"], m["text"]) for m in sandbox.messages()] == [("09121234567", "Hi Sara, your code is A")]
    receipt = result.xcom("invalid_skip")
    assert receipt["counts"] | {"requested": 4, "sent": 1, "invalid": 3} == receipt["counts"]
    assert result.xcom("empty_succeed")["counts"]["requested"] == 0
