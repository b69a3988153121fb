"""What Airflow learns about this provider through the ``apache_airflow_provider`` entry point.

Airflow 3.2 and later build the connection forms from ``conn-fields`` and ``ui-field-behaviour``
below without importing the hooks; earlier versions call the hooks' ``get_connection_form_widgets``
and ``get_ui_field_behaviour``, which read the same definitions through the helpers at the end.
"""

from __future__ import annotations

from typing import Any

_GATEWAYS: dict[str, dict[str, Any]] = {
    "bitel": {
        "hook-class-name": "airflow_provider_p2psms.hooks.bitel.BitelHook",
        "hook-name": "Bitel SMS",
        "provider-name": "Bitel",
        "token-label": "API token",
        "token-placeholder": "Bitel JWT (panel > API)",
        "default-base-url": "https://api.bitel.rest",
        "sender-label": "Gateway number (sender)",
        "sender-example": "10009909",
        "sender-description": "Bitel gatewayNumber to send from. Leave empty for the account's default gateway "
        "(which does not deliver to blacklisted numbers).",
    },
    "ippanel": {
        "hook-class-name": "airflow_provider_p2psms.hooks.ippanel.IPPanelHook",
        "hook-name": "IPPanel SMS",
        "provider-name": "IPPanel",
        "token-label": "API key",
        "token-placeholder": "IPPanel API key (panel > Developers > Access Keys)",
        "default-base-url": "https://edge.ippanel.com/v1",
        "sender-label": "Sender number (from_number)",
        "sender-example": "+983000505",
        "sender-description": "Required. A sender line of your IPPanel account, in E.164 form.",
    },
}

_COMMON_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 1},
        "description": "How long to wait for the gateway to answer one request.",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0},
        "description": "Retries of a request the gateway did not process (429, 5xx, network errors).",
    },
    "batch_size": {
        "label": "Batch size",
        "schema": {"type": ["integer", "null"], "default": 100, "minimum": 1, "maximum": 100},
        "description": "Messages per send request (at most 100).",
    },
    "verify_ssl": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "Keep on; turn off only for a test server with a self-signed certificate.",
    },
}


def conn_fields(conn_type: str) -> dict[str, dict[str, Any]]:
    """The extra fields of one connection type, in the ``conn-fields`` format."""
    gateway = _GATEWAYS[conn_type]
    # The connection form shows no placeholder for extra fields, so the example goes in the help text
    # (and, on Airflow 3.2+, in the field's suggestions).
    sender = {
        "label": gateway["sender-label"],
        "schema": {"type": ["string", "null"], "examples": [gateway["sender-example"]]},
        "description": f"{gateway['sender-description']} Example: {gateway['sender-example']}",
    }
    return {"sender": sender, **_COMMON_FIELDS}


def ui_field_behaviour(conn_type: str) -> dict[str, Any]:
    """Hidden, relabelled and placeholder standard fields of one connection type (hook format)."""
    gateway = _GATEWAYS[conn_type]
    return {
        "hidden_fields": ["schema", "port", "login"],
        "relabeling": {"password": gateway["token-label"], "host": "Base URL (optional)"},
        "placeholders": {
            "password": gateway["token-placeholder"],
            "host": gateway["default-base-url"],
            "sender": gateway["sender-example"],
            "timeout": "30",
            "max_retries": "5",
            "batch_size": "100",
            "extra": '{"sender": "' + gateway["sender-example"] + '"}',
        },
    }


def legacy_form_widgets(conn_type: str) -> dict[str, Any]:
    """The extra fields as WTForms widgets, for Airflow before 3.2."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import NumberRange, Optional

    fields = conn_fields(conn_type)
    widgets: dict[str, Any] = {}
    for name, field in fields.items():
        kind = field["schema"]["type"][0]
        if kind == "boolean":
            widgets[name] = BooleanField(field["label"], default=field["schema"].get("default", False))
        elif kind == "integer":
            widgets[name] = IntegerField(
                field["label"],
                validators=[Optional(), NumberRange(min=field["schema"].get("minimum", 0))],
                widget=BS3TextFieldWidget(),
                description=field.get("description", ""),
            )
        else:
            widgets[name] = StringField(
                field["label"], widget=BS3TextFieldWidget(), description=field.get("description", "")
            )
    return widgets


def _connection_type(conn_type: str) -> dict[str, Any]:
    gateway = _GATEWAYS[conn_type]
    behaviour = ui_field_behaviour(conn_type)
    return {
        "connection-type": conn_type,
        "hook-class-name": gateway["hook-class-name"],
        "hook-name": gateway["hook-name"],
        "conn-fields": conn_fields(conn_type),
        "ui-field-behaviour": {
            "hidden-fields": behaviour["hidden_fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        },
    }


def gateway_facts(conn_type: str) -> dict[str, Any] | None:
    """What this provider declares about the gateway of ``conn_type`` (names, labels, default URL), if it knows it."""
    return _GATEWAYS.get(conn_type)


def hook_class_names() -> dict[str, str]:
    """Connection type to hook class path, for every gateway this provider knows."""
    return {conn_type: gateway["hook-class-name"] for conn_type, gateway in _GATEWAYS.items()}


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_p2psms import __version__

    return {
        "package-name": "airflow-provider-p2psms",
        "name": "P2P SMS (Bitel, IPPanel)",
        "description": "Send peer-to-peer SMS, one personal text per recipient, through the Bitel and IPPanel "
        "gateways, and wait for delivery.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "P2P SMS",
                "external-doc-url": "https://api.bitel.rest",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "P2P SMS",
                "python-modules": [
                    "airflow_provider_p2psms.operators.p2p_sms",
                    "airflow_provider_p2psms.operators.opt_out_replies",
                ],
            }
        ],
        "sensors": [{"integration-name": "P2P SMS", "python-modules": ["airflow_provider_p2psms.sensors.p2p_sms"]}],
        "hooks": [
            {
                "integration-name": "P2P SMS",
                "python-modules": [
                    "airflow_provider_p2psms.hooks.base",
                    "airflow_provider_p2psms.hooks.bitel",
                    "airflow_provider_p2psms.hooks.ippanel",
                ],
            }
        ],
        "triggers": [{"integration-name": "P2P SMS", "python-modules": ["airflow_provider_p2psms.triggers.p2p_sms"]}],
        "connection-types": [_connection_type(conn_type) for conn_type in _GATEWAYS],
        "notifications": ["airflow_provider_p2psms.notifications.p2p_sms.P2PSmsNotifier"],
        "config": {
            "p2psms": {
                "description": "Settings of the P2P SMS provider.",
                "options": {
                    "checkpoint_path": {
                        "description": "Where P2PSmsOperator keeps its resume checkpoints when the task state "
                        "store is not available (Airflow before 3.3) or not wanted, as an ObjectStoragePath URL. "
                        "With several workers, use storage every worker can read. Default: "
                        "file://$AIRFLOW_HOME/p2psms_checkpoints.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://my-bucket/p2psms",
                        "default": "",
                    }
                },
            }
        },
    }
