"""The send operator's argument checks, run in its constructor (so when a DAG file is parsed).

Each check appends a problem in the words of the argument it is about; the operator raises one
:class:`~airflow_provider_p2psms.exceptions.SmsConfigurationError` naming them all. Values that are
still Jinja templates are checked once rendered, in ``execute``. Nothing here imports the engine.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.operators.steps import templated
from airflow_provider_p2psms.utils.rendered import as_bool
from airflow_provider_p2psms.utils.window import SendWindow

CHOICES: dict[str, tuple[str, ...]] = {
    "on_invalid": ("skip", "fail"),
    "on_empty": ("skip", "succeed", "fail"),
    "on_uncertain": ("skip", "resend"),
    "on_rejected": ("isolate", "fail"),
    "outside_window": ("defer", "schedule"),
}


def whole_number_problems(problems: list[str], **numbers: Any) -> None:
    """Append a problem for each value that is not a whole number of at least 1."""
    for name, number in numbers.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            problems.append(f"{name} must be a whole number of at least 1, not {number!r}")


def rate_problems(problems: list[str], **rates: Any) -> None:
    """Append a problem for each value that is neither ``None`` nor a positive number (messages a second)."""
    for name, rate in rates.items():
        number = isinstance(rate, int | float) and not isinstance(rate, bool)
        if rate is not None and not (number and 0 < rate < float("inf")):
            problems.append(f"{name} must be a positive number of messages a second, such as 50, not {rate!r}")


def choice_problems(problems: list[str], **values: Any) -> None:
    """Append a problem for each value that is not one of its argument's choices (:data:`CHOICES`)."""
    for name, value in values.items():
        allowed = CHOICES[name]
        if value not in allowed:
            problems.append(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


def source_problems(
    problems: list[str], *, recipients: Any, sql: Any, sql_conn_id: Any, outcomes_conn_id: Any, key_field: Any
) -> None:
    """The recipients' source, and the row key an outcomes table needs."""
    if (recipients is None) == (sql is None):
        problems.append("give exactly one recipient source: recipients=... or sql=... (with sql_conn_id)")
    if sql is not None and not sql_conn_id:
        problems.append("sql needs sql_conn_id, the connection to run it on")
    if outcomes_conn_id and not key_field:
        problems.append(
            "an outcomes table needs key_field, the row field that identifies a row (e.g. 'customer_id'): "
            "a row's number is not stable across retries of an unordered query"
        )
    if key_field is not None and (not isinstance(key_field, str) or not key_field.strip()):
        problems.append(f"key_field must be a row field's name, not {key_field!r}")


def flag_problem(problems: list[str], name: str, value: Any) -> Any:
    """``value`` as a bool unless it is a template (checked once rendered); a problem if it is neither."""
    if templated(value):
        return value
    try:
        return as_bool(value, name)
    except SmsConfigurationError as error:
        problems.append(str(error).rstrip("."))
        return value


def window_problems(
    problems: list[str], *, send_window: Any, timezone: Any, outside_window: Any, send_time: Any
) -> None:
    """The quiet hours: a window that parses, and no ``send_time`` beside ``outside_window='schedule'``."""
    if send_window is not None and not templated(send_window, timezone):
        try:
            SendWindow.parse(send_window, timezone)
        except SmsConfigurationError as error:
            problems.append(str(error).rstrip("."))
    if send_window is not None and outside_window == "schedule" and send_time is not None:
        problems.append("outside_window='schedule' sets send_time itself; leave send_time unset")


def suppression_problems(
    problems: list[str], *, opt_out_footer: Any, exclude_sql: Any, exclude_conn_id: Any, sql_conn_id: Any
) -> None:
    """The opt-out footer is a line of text; a suppression query has a connection to run on."""
    if opt_out_footer is not None and (not isinstance(opt_out_footer, str) or not opt_out_footer.strip()):
        problems.append(f"opt_out_footer must be a line of text such as 'لغو۱۱', not {opt_out_footer!r}")
    if exclude_sql is not None and not (exclude_conn_id or sql_conn_id):
        problems.append("exclude_sql needs exclude_conn_id (or sql_conn_id), the connection to run it on")


def approval_problems(problems: list[str], *, approved_dry_run: Any, approval_tolerance: Any) -> None:
    """The approval gate: a tolerance that is a fraction, and an approved receipt that is not plain text."""
    number = isinstance(approval_tolerance, int | float) and not isinstance(approval_tolerance, bool)
    if not number or not 0 <= approval_tolerance <= 1:
        problems.append(
            f"approval_tolerance must be a fraction from 0 (exact) to 1, such as 0.05, not {approval_tolerance!r}"
        )
    if isinstance(approved_dry_run, str) and not templated(approved_dry_run):
        problems.append(
            "approved_dry_run must be the approved dry run's receipt, e.g. approved_dry_run=dry_run.output or "
            "\"{{ ti.xcom_pull(task_ids='dry_run') }}\", not a plain string"
        )


def cost_problems(problems: list[str], *, check_credit: Any, max_cost: Any) -> Any:
    """``check_credit`` a flag, ``max_cost`` a positive number (each checked once rendered if a template);
    returns ``check_credit`` as a bool unless it is a template."""
    if max_cost is not None and not templated(max_cost):
        try:
            max_cost_value(max_cost)
        except SmsConfigurationError as error:
            problems.append(str(error).rstrip("."))
    return flag_problem(problems, "check_credit", check_credit)


def max_cost_value(value: Any) -> float | None:
    """
    ``max_cost`` as a number, whether native or rendered from a template; ``None`` (no limit) for ``None``
    and for what a template renders an unset value to (``""``, ``"None"``, ``"null"``).

    :raises SmsConfigurationError: for anything but a positive number.
    """
    if value is None:
        return None
    number = value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "null"):
            return None
        try:
            number = float(text)
        except ValueError:
            number = None
    if isinstance(number, int | float) and not isinstance(number, bool) and 0 < number < float("inf"):
        return float(number)
    raise SmsConfigurationError(
        f"max_cost must be a positive number in the gateway's price unit, such as 500000, not {value!r}. "
        "If it is a template, check what it renders to."
    )
