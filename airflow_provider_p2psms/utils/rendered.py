"""Rendered template fields: flags typed after rendering, and personal data kept out of the UI.

Jinja renders ``"{{ params.dry }}"`` to the string ``"False"``, which Python reads as true: a templated
flag is typed only once rendered, and anything but a clear yes or no is an error naming the parameter.

Airflow stores every rendered template field for its "Rendered Template" view. Recipient rows,
bind parameters and receipts carry phone numbers and row values, which are personal data: the task
keeps them, and what Airflow stores (and shows) is a count, e.g. ``"1,234 recipients (not shown)"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any, ClassVar

from airflow_provider_p2psms.exceptions import SmsConfigurationError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


def as_bool(value: Any, name: str) -> bool:
    """
    ``value`` of the parameter ``name`` as a bool, whether native or rendered from a template.

    Accepts ``True``/``False``, ``1``/``0`` and the strings ``true/false/1/0/yes/no/on/off`` (any case).

    :raises SmsConfigurationError: for anything else, naming the parameter.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE and text:
            return False
    raise SmsConfigurationError(
        f"{name} must be true or false (True/False, true/false, 1/0, yes/no), not {value!r}. "
        f"If it is a template, check what it renders to."
    )


class PersonalDataFields:
    """
    Keeps the rendered values of :attr:`personal_fields` for the task, and a count for the UI.

    After rendering, each personal field holds a description such as ``"1,234 recipients (not
    shown)"``, which is what Airflow stores as the rendered field; :meth:`personal_value` gives the task
    the real value.
    """

    #: Template fields that can carry phone numbers or row values.
    personal_fields: ClassVar[tuple[str, ...]] = ()

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)  # type: ignore[misc]
        kept: dict[str, Any] = {}
        for name in self.personal_fields:
            value = getattr(self, name, None)
            if value is None:
                continue
            kept[name] = value
            setattr(self, name, describe(name, value))
        self.__dict__["_personal_values"] = kept

    def personal_value(self, name: str) -> Any:
        """The rendered value of the personal field ``name`` (the attribute itself before rendering)."""
        kept = self.__dict__.get("_personal_values") or {}
        return kept[name] if name in kept else getattr(self, name)


def describe(name: str, value: Any) -> str:
    """What the UI shows instead of a personal field's value: its size, never its content."""
    if isinstance(value, Mapping) and "counts" in value and "messages" in value:
        sent = (value.get("counts") or {}).get("sent")
        return f"send receipt of {sent:,} messages (not shown)" if isinstance(sent, int) else "send receipt (not shown)"
    noun = name.replace("_", " ")
    if isinstance(value, Sized) and not isinstance(value, str | bytes):
        return f"{len(value):,} {noun} (not shown)"
    return f"{noun} (not shown)"
