"""The connection form of Airflow before 3.2, which reads it from hook class methods.

Airflow 3.2 and later build the form from ``conn-fields`` and ``ui-field-behaviour`` in
``get_provider_info`` without importing the hooks. Earlier versions call each hook class's own
``get_connection_form_widgets`` and ``get_ui_field_behaviour``, and look for them only in the
class's own namespace, so every gateway hook class gets both, built from the same definitions.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LegacyConnectionForm:
    """Gives every subclass that sets ``conn_type`` the two form class methods of Airflow before 3.2."""

    conn_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.conn_type:
            cls.get_ui_field_behaviour = classmethod(_ui_field_behaviour)  # type: ignore[attr-defined]
            cls.get_connection_form_widgets = classmethod(_connection_form_widgets)  # type: ignore[attr-defined]


def _ui_field_behaviour(cls: type[LegacyConnectionForm]) -> dict[str, Any]:
    """Connection form layout, for Airflow before 3.2."""
    from airflow_provider_p2psms.get_provider_info import ui_field_behaviour

    return ui_field_behaviour(cls.conn_type)


def _connection_form_widgets(cls: type[LegacyConnectionForm]) -> dict[str, Any]:
    """Extra connection form fields, for Airflow before 3.2."""
    from airflow_provider_p2psms.get_provider_info import legacy_form_widgets

    return legacy_form_widgets(cls.conn_type)
