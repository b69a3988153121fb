"""The approval gate: what a campaign's approver sees, and the send's check that it is still that campaign.

A dry run (``P2PSmsOperator(dry_run=True)``) returns a receipt whose ``preview`` holds the message template
and a few sample texts, numbers masked (:func:`dry_run_preview`). :func:`approval_summary` turns that receipt
into the text an ``ApprovalOperator`` shows. The send, given the approved receipt (``approved_dry_run``),
reads and checks every row before sending the first text and calls :func:`check_approved` with what that
pass counted: when the data moved beyond the tolerance since the approval, nothing is sent.

Imported when a DAG file is parsed (the summary is a template macro): nothing here imports the engine at
module level.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict

from airflow_provider_p2psms.exceptions import SmsInputError
from airflow_provider_p2psms.models import EstimatedReceipt
from airflow_provider_p2psms.utils.phone import mask_numbers_in_text

#: Sample texts a dry run keeps for its approver.
MAX_SAMPLES = 3
#: How far each figure may move between the approved dry run and the send, as a fraction (5%).
DEFAULT_TOLERANCE = 0.05
#: A template longer than this is cut in the receipt (the receipt stays small).
MAX_TEMPLATE_CHARS = 2000


class DryRunPreview(TypedDict):
    """
    What a dry run's receipt carries for its approver (its ``preview``).

    ``template`` is the message template's source, never rendered with a row; ``samples`` up to
    :data:`MAX_SAMPLES` rendered texts with every number in them masked; ``parts`` the SMS parts of all
    the messages that would be sent.
    """

    template: str
    samples: list[str]
    parts: int


class DryRunReceipt(EstimatedReceipt):
    """A dry run's receipt: an :class:`~airflow_provider_p2psms.models.EstimatedReceipt` with its ``preview``."""

    preview: DryRunPreview


class CampaignCounts(TypedDict):
    """
    The counts of a whole campaign, as a dry run or a send's pre-send pass reads them before sending.

    ``requested`` rows were read, ``messages`` would be sent, ``invalid``, ``duplicate`` and ``excluded``
    rows were left out; ``parts`` is the SMS parts of the ``messages``.
    """

    requested: int
    messages: int
    invalid: int
    duplicate: int
    excluded: int
    parts: int


CountName = Literal["requested", "messages", "invalid", "duplicate", "excluded"]

#: The counts compared, as the approver and the errors name them.
_COUNTS: tuple[tuple[CountName, str], ...] = (
    ("requested", "rows read"),
    ("messages", "messages to send"),
    ("invalid", "invalid rows"),
    ("duplicate", "duplicate rows"),
    ("excluded", "excluded rows"),
)


def dry_run_preview(template: str, texts: Iterable[str], parts: int) -> DryRunPreview:
    """A dry run's ``preview``: the template's source, its first :data:`MAX_SAMPLES` texts masked, the parts."""
    samples = [mask_numbers_in_text(text) for _, text in zip(range(MAX_SAMPLES), texts, strict=False)]
    return {"template": _cut(template), "samples": samples, "parts": parts}


def template_source(message: str, environment: Any = None) -> str:
    """The source of the ``message`` template: the file's text for a ``.j2``/``.txt`` name, else ``message``."""
    loader = getattr(environment, "loader", None)
    if message.endswith((".j2", ".txt")) and loader is not None:
        return str(loader.get_source(environment, message)[0])
    return message


def approved_receipt(value: Any) -> dict[str, Any]:
    """
    The approved dry run's receipt from ``approved_dry_run``: a dict, or its string form (JSON or the Python
    literal ``{{ ti.xcom_pull(...) }}`` renders to).

    :raises SmsInputError: when it is not the receipt of a dry run with a ``preview``.
    """
    receipt = value
    if isinstance(value, str):
        from airflow_provider_p2psms.campaign.recipients import parse_rendered

        receipt = parse_rendered(value, "approved_dry_run") if value.strip() not in ("", "None") else None
    how = (
        "Pass the dry-run task's output, e.g. approved_dry_run=dry_run.output or "
        "\"{{ ti.xcom_pull(task_ids='dry_run') }}\"."
    )
    if receipt is None:
        raise SmsInputError(f"approved_dry_run is empty: the dry run returned nothing to approve. {how}")
    counts = receipt.get("counts") if isinstance(receipt, Mapping) else None
    if not isinstance(counts, Mapping) or not isinstance(receipt.get("preview"), Mapping):
        raise SmsInputError(
            f"approved_dry_run is not the receipt of a dry run (a dict with 'counts' and 'preview'). {how} "
            "A dry run made by an earlier version of the provider has no 'preview': run it again."
        )
    if counts.get("sent"):
        raise SmsInputError(f"approved_dry_run is the receipt of a send, not of a dry run. {how}")
    return dict(receipt)


def approved_counts(receipt: Mapping[str, Any]) -> CampaignCounts:
    """The :class:`CampaignCounts` a dry run's receipt reports."""
    counts = receipt["counts"]
    return {
        "requested": int(counts.get("requested") or 0),
        "messages": int(counts.get("dry_run") or 0),
        "invalid": int(counts.get("invalid") or 0),
        "duplicate": int(counts.get("duplicate") or 0),
        "excluded": int(counts.get("excluded") or 0),
        "parts": int(receipt["preview"].get("parts") or 0),
    }


def estimated_cost(receipt: Mapping[str, Any]) -> float | None:
    """A receipt's estimated cost (its ``estimate``'s ``cost``); ``None`` when it has no estimate."""
    estimate = receipt.get("estimate")
    cost = estimate.get("cost") if isinstance(estimate, Mapping) else None
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        return float(cost)
    return None


def approval_summary(receipt: Any) -> str:
    """
    The text an ``ApprovalOperator`` shows for a dry run (Markdown): the gateway, the counts, the estimated
    cost, the template and the masked sample texts. No other row value is in it.
    """
    receipt = approved_receipt(receipt)
    counts = approved_counts(receipt)
    preview = receipt["preview"]
    lines = [
        f"**Dry run** through {receipt.get('provider', 'the gateway')} "
        f"(connection `{receipt.get('sms_conn_id', '?')}`). Nothing has been sent yet.",
        "",
        *(f"- {label.capitalize()}: {counts[name]:,}" for name, label in _COUNTS),
        f"- SMS parts: {counts['parts']:,}",
    ]
    cost = estimated_cost(receipt)
    if cost is not None:
        lines.append(f"- Estimated cost: {_figure(cost)}")
    fence = "`" * max(3, _longest_backtick_run(preview["template"]) + 1)
    lines += ["", "**Message template**", "", fence, preview["template"], fence, ""]
    samples = preview.get("samples") or []
    lines.append(f"**Sample texts** ({len(samples)}, numbers masked)" if samples else "**No sample texts.**")
    if samples:
        lines.append("")
        lines += [f"{number}. {mask_numbers_in_text(text)}" for number, text in enumerate(samples, start=1)]
    return "\n".join(lines)


def check_approved(
    approved: Mapping[str, Any],
    current_counts: CampaignCounts,
    current_estimate: float | None,
    tolerance: float,
    *,
    sms_conn_id: str | None = None,
    template: str | None = None,
) -> None:
    """
    Check that the send is the campaign approved: the same connection and template, and counts and estimate
    within ``tolerance`` of the approved dry run's.

    Each count may move by ``tolerance`` times the approved rows read; the SMS parts and the estimated cost
    by ``tolerance`` times their approved value. ``0`` means exactly the same.

    :param approved: the approved dry run's receipt (see :func:`approved_receipt`).
    :param current_counts: the counts of the send's pre-send pass.
    :param current_estimate: the send's estimated cost; ``None`` when not known (then not compared).
    :param sms_conn_id: the send's SMS connection, compared when given.
    :param template: the send's template source, compared when given.
    :raises SmsInputError: naming each figure that moved, approved and now, and the tolerance.
    """
    fix = "Nothing was sent. Run the dry run again and approve its new summary"
    if sms_conn_id is not None and approved.get("sms_conn_id") not in (None, sms_conn_id):
        raise SmsInputError(
            f"The approved dry run went through connection '{approved['sms_conn_id']}', this send through "
            f"'{sms_conn_id}'. {fix}."
        )
    if template is not None and approved["preview"].get("template") != _cut(template):
        raise SmsInputError(f"The message template is not the one approved in the dry run. {fix}.")
    then = approved_counts(approved)
    base = max(then["requested"], 1)
    moved = [_moved(label, then[name], current_counts[name], tolerance * base) for name, label in _COUNTS]
    moved.append(_moved("SMS parts", then["parts"], current_counts["parts"], tolerance * then["parts"]))
    approved_cost = estimated_cost(approved)
    if approved_cost is not None and current_estimate is not None:
        moved.append(_moved("estimated cost", approved_cost, current_estimate, tolerance * approved_cost))
    problems = [problem for problem in moved if problem]
    if problems:
        raise SmsInputError(
            "The campaign changed since its dry run was approved, beyond the approval tolerance of "
            f"{_figure(tolerance * 100)}%: " + "; ".join(problems) + f". {fix} (or raise approval_tolerance)."
        )


def _moved(label: str, then: float, now: float, allowed: float) -> str:
    """A problem line when ``now`` differs from ``then`` by more than ``allowed``; else ``""``."""
    if abs(now - then) <= allowed + 1e-9:
        return ""
    change = ("+" if now > then else "-") + _figure(abs(now - then))
    return f"{label} {_figure(then)} approved, {_figure(now)} now ({change}; at most ±{_figure(allowed)} allowed)"


def _figure(value: float) -> str:
    """A count or an amount as people read it: ``1,234``, ``0.15``, ``12,345.5``."""
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _cut(template: str) -> str:
    return template if len(template) <= MAX_TEMPLATE_CHARS else template[: MAX_TEMPLATE_CHARS - 1] + "…"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return longest
