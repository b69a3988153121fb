"""The provider as a real Airflow 3 sees it: CLI listings, hook discovery and the connection forms.

Each check runs in a fresh interpreter (ProvidersManager is a process-wide singleton that caches
what it discovered); the three processes start together to keep the wall time down. They inherit
the throwaway AIRFLOW_HOME that ``tests/conftest.py`` sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from airflow_provider_p2psms import __version__
from airflow_provider_p2psms.version_compat import AIRFLOW_V_3_2_PLUS

PACKAGE = "airflow-provider-p2psms"
HOOK_CLASSES = {
    "bitel": "airflow_provider_p2psms.hooks.bitel.BitelHook",
    "ippanel": "airflow_provider_p2psms.hooks.ippanel.IPPanelHook",
}

INSPECT_PROVIDERS_MANAGER = textwrap.dedent(
    """
    import json, sys, warnings
    from airflow.providers_manager import ProvidersManager

    def own_hook_modules():
        return sorted(m for m in sys.modules if m.startswith("airflow_provider_p2psms.hooks"))

    manager = ProvidersManager()
    manager.initialize_providers_hooks()
    widgets = {
        key: {"hook": w.hook_class_name, "package": w.package_name, "field_name": w.field_name,
              "field": w.field, "sensitive": w.is_sensitive}
        # Airflow 3.2+ only: the form built from provider info, before any hook is imported.
        for key, w in getattr(manager, "_connection_form_widgets_from_metadata", {}).items()
        if key.startswith(("extra__bitel__", "extra__ippanel__"))
    }
    behaviours = {t: getattr(manager, "_field_behaviours_from_metadata", {}).get(t) for t in ("bitel", "ippanel")}
    ui = {m.connection_type: [m.hook_name, m.hook_class_name, m.field_behaviour]
          for m in getattr(manager, "iter_connection_type_hook_ui_metadata", lambda: [])()
          if m.connection_type in ("bitel", "ippanel")}
    imported_by_metadata = own_hook_modules()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = manager.hooks["bitel"]
        hook = {"class": info.hook_class_name, "conn_id_attribute": info.connection_id_attribute_name,
                "name": info.hook_name, "package": info.package_name, "testable": info.connection_testable}
        imported_by_hook = own_hook_modules()
        same_after_import = not widgets or (manager.field_behaviours["ippanel"] == behaviours["ippanel"]
                             and sorted(k for k in manager.connection_form_widgets if "__bitel__" in k)
                             == sorted(k for k in widgets if "__bitel__" in k))
    print(json.dumps({
        "imported_by_metadata": imported_by_metadata,
        "widgets": widgets,
        "behaviours": behaviours,
        "ui": ui,
        "hook": hook,
        "imported_by_hook": imported_by_hook,
        "same_after_import": same_after_import,
        "warnings_about_our_hooks": [str(w.message) for w in caught if "airflow_provider_p2psms" in str(w.message)],
    }))
    """
)

COMMANDS = {
    "providers_list": [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
    "providers_hooks": [sys.executable, "-m", "airflow", "providers", "hooks", "-o", "json"],
    "providers_manager": [sys.executable, "-c", INSPECT_PROVIDERS_MANAGER],
}


def _last_json_line(output: str) -> Any:
    """Airflow may log to stdout too (``[info     ] ...``); the JSON answer is the last line that parses."""
    for line in reversed(output.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON in the output:\n{output}")


@pytest.fixture(scope="module")
def airflow_says() -> dict[str, Any]:
    """Run every command at once in a fresh interpreter; return each one's parsed JSON output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    processes = {
        name: subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for name, command in COMMANDS.items()
    }
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{name} failed:\n{out}\n{err}"
        results[name] = _last_json_line(out)
    return results


def test_providers_list_shows_the_package(airflow_says):
    ours = [p for p in airflow_says["providers_list"] if p["package_name"] == PACKAGE]
    assert len(ours) == 1
    assert ours[0]["version"] == __version__


def test_providers_hooks_lists_both_gateways(airflow_says):
    ours = {h["connection_type"]: h for h in airflow_says["providers_hooks"] if h.get("package_name") == PACKAGE}
    assert {t: (h["class"], h["conn_id_attribute_name"], h["hook_name"]) for t, h in ours.items()} == {
        "bitel": (HOOK_CLASSES["bitel"], "sms_conn_id", "Bitel SMS"),
        "ippanel": (HOOK_CLASSES["ippanel"], "sms_conn_id", "IPPanel SMS"),
    }


def test_providers_manager_resolves_the_hook(airflow_says):
    assert airflow_says["providers_manager"]["hook"] == {
        "class": HOOK_CLASSES["bitel"],
        "conn_id_attribute": "sms_conn_id",
        "name": "Bitel SMS",
        "package": PACKAGE,
        "testable": True,
    }
    assert airflow_says["providers_manager"]["imported_by_hook"] == [
        "airflow_provider_p2psms.hooks",
        "airflow_provider_p2psms.hooks.base",
        "airflow_provider_p2psms.hooks.bitel",
        "airflow_provider_p2psms.hooks.codec",
        "airflow_provider_p2psms.hooks.connection_form",
        "airflow_provider_p2psms.hooks.cost",
        "airflow_provider_p2psms.hooks.flows",
        "airflow_provider_p2psms.hooks.settings",
        "airflow_provider_p2psms.hooks.transport",
    ]


@pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="Airflow before 3.2 builds the form from the hook classes")
def test_connection_form_fields_come_from_provider_info_without_importing_the_hooks(airflow_says):
    found = airflow_says["providers_manager"]
    assert found["imported_by_metadata"] == []

    widgets = found["widgets"]
    assert sorted(widgets) == sorted(
        f"extra__{conn_type}__{field}"
        for conn_type in ("bitel", "ippanel")
        for field in ("sender", "timeout", "max_retries", "batch_size", "verify_ssl")
    )
    sender = widgets["extra__bitel__sender"]
    assert (sender["hook"], sender["package"], sender["field_name"], sender["sensitive"]) == (
        HOOK_CLASSES["bitel"],
        PACKAGE,
        "sender",
        False,
    )
    assert sender["field"]["schema"]["title"] == "Gateway number (sender)"
    assert widgets["extra__ippanel__sender"]["field"]["schema"]["title"] == "Sender number (from_number)"
    assert widgets["extra__ippanel__batch_size"]["field"]["schema"]["maximum"] == 100
    assert widgets["extra__bitel__verify_ssl"]["field"]["schema"]["type"] == ["boolean", "null"]


@pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="Airflow before 3.2 builds the form from the hook classes")
def test_field_behaviour_hides_relabels_and_fills_placeholders(airflow_says):
    found = airflow_says["providers_manager"]
    assert found["behaviours"]["ippanel"] == {
        "hidden_fields": ["schema", "port", "login"],
        "relabeling": {"password": "API key", "host": "Base URL (optional)"},
        "placeholders": {
            "password": "IPPanel API key (panel > Developers > Access Keys)",
            "host": "https://edge.ippanel.com/v1",
            "extra__ippanel__sender": "+983000505",
            "extra__ippanel__timeout": "30",
            "extra__ippanel__max_retries": "5",
            "extra__ippanel__batch_size": "100",
            "extra": '{"sender": "+983000505"}',
        },
    }
    assert found["behaviours"]["bitel"]["relabeling"] == {"password": "API token", "host": "Base URL (optional)"}
    assert found["behaviours"]["bitel"]["placeholders"]["extra__bitel__sender"] == "10009909"
    assert found["ui"]["ippanel"] == ["IPPanel SMS", HOOK_CLASSES["ippanel"], found["behaviours"]["ippanel"]]
    assert found["ui"]["bitel"][:2] == ["Bitel SMS", HOOK_CLASSES["bitel"]]


@pytest.mark.skipif(not AIRFLOW_V_3_2_PLUS, reason="Airflow before 3.2 builds the form from the hook classes")
def test_importing_the_hooks_neither_changes_the_form_nor_warns(airflow_says):
    found = airflow_says["providers_manager"]
    assert found["same_after_import"] is True
    assert found["warnings_about_our_hooks"] == []
