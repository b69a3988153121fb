"""
The deployment tests are collected only when a run asks for them with ``-m deployment``.

They start a whole multi-worker Airflow (minutes of wall time and both cores of a small machine), so the
default ``make test`` run, which collects everything under ``tests/``, must not pick them up, not even to
deselect them: this hook keeps their modules out of collection unless the mark expression selects
``deployment``. ``make test-deployment`` runs ``pytest -m deployment tests/deployment``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

MARK = "deployment"


def _asked_for(config: pytest.Config) -> bool:
    expression = str(config.getoption("markexpr", default="") or "")
    return MARK in expression and f"not {MARK}" not in expression


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_") and not _asked_for(config):
        return True
    return None
