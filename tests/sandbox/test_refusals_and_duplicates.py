"""The sandbox's refused number (``...00666``) and IPPanel's duplicate guard, over a real socket with raw HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_p2psms.sandbox import SUFFIX_REFUSED, SandboxConfig, SandboxServer

if TYPE_CHECKING:
    pass

BITEL_AUTH = {"Authorization": "Bearer sandbox-bitel-token"}
IPPANEL_AUTH = {"Authorization": "sandbox-ippanel-key"}
SENDER = "+983000505"
REFUSED_LOCAL = f"091212{SUFFIX_REFUSED}"
REFUSED_E164 = f"+9891212{SUFFIX_REFUSED}"


def bitel_send(session: requests.Session, sandbox: SandboxServer, numbers: list[str], text: str = "hi") -> Any:
    body = {"messages": [text] * len(numbers), "phoneNumbers": numbers}
    return session.post(f"{sandbox.bitel_url}/api/v2/sms/batch/p2p", json=body, headers=BITEL_AUTH, timeout=5)


def ippanel_send(session: requests.Session, sandbox: SandboxServer, params: list[dict[str, Any]]) -> Any:
    body = {"sending_type": "peer_to_peer", "from_number": SENDER, "params": params}
    return session.post(f"{sandbox.ippanel_url}/api/send", json=body, headers=IPPANEL_AUTH, timeout=5)


# --- the refused number -------------------------------------------------------------------------


def test_bitel_refuses_a_whole_request_holding_the_refused_number(session, sandbox):
    response = bitel_send(session, sandbox, ["09121234567", REFUSED_LOCAL, "09351234567"])
    assert response.status_code == 400
    assert response.json() == {"result": None, "error": "InvalidPhoneNumber"}
    assert sandbox.messages() == []
    assert bitel_send(session, sandbox, ["09121234567", "09351234567"]).status_code == 200
    single = session.post(
        f"{sandbox.bitel_url}/api/v2/sms/single",
        json={"phoneNumber": REFUSED_LOCAL, "message": "hi"},
        headers=BITEL_AUTH,
        timeout=5,
    )
    assert (single.status_code, single.json()["error"]) == (400, "InvalidPhoneNumber")
    assert len(sandbox.messages()) == 2


def test_ippanel_refuses_a_whole_request_naming_the_recipient_by_its_path(session, sandbox):
    params = [
        {"recipients": ["+989121234567"], "message": "first"},
        {"recipients": ["+989351234567", REFUSED_E164], "message": "second"},
    ]
    response = ippanel_send(session, sandbox, params)
    assert response.status_code == 422
    meta = response.json()["meta"]
    assert meta["message_code"] == "400-2"
    assert list(meta["errors"]) == ["params.1.recipients.1"]
    assert sandbox.messages() == []


def test_ippanel_can_refuse_without_saying_which_recipient(session, sandbox):
    sandbox.configure(ippanel_names_refused=False)
    response = ippanel_send(session, sandbox, [{"recipients": ["+989121234567", REFUSED_E164], "message": "x"}])
    assert response.status_code == 422
    assert list(response.json()["meta"]["errors"]) == ["recipients"]
    assert sandbox.messages() == []


def test_the_refused_number_fails_no_other_check_first(session, sandbox):
    """A malformed number is still a malformed number; a wrong sender line is still reported beside it."""
    body = {
        "sending_type": "peer_to_peer",
        "from_number": "+981111111",
        "params": [{"recipients": [REFUSED_E164], "message": "x"}],
    }
    response = session.post(f"{sandbox.ippanel_url}/api/send", json=body, headers=IPPANEL_AUTH, timeout=5)
    assert sorted(response.json()["meta"]["errors"]) == ["from_number", "params.0.recipients.0"]


# --- IPPanel's duplicate guard ------------------------------------------------------------------


def test_an_identical_ippanel_request_within_the_window_is_answered_429_and_not_stored(session, sandbox):
    params = [{"recipients": ["+989121234567", "+989351234567"], "message": "hi"}]
    assert ippanel_send(session, sandbox, params).status_code == 200
    again = ippanel_send(session, sandbox, params)
    assert again.status_code == 429
    assert again.json()["meta"]["status"] is False
    assert "Retry-After" not in again.headers  # whether IPPanel sends one is not documented
    # The same pairs in another order are the same request; another text, sender or recipient is not.
    reordered = [{"recipients": ["+989351234567", "+989121234567"], "message": "hi"}]
    assert ippanel_send(session, sandbox, reordered).status_code == 429
    assert ippanel_send(session, sandbox, [{"recipients": ["+989121234567"], "message": "hi"}]).status_code == 200
    assert (
        ippanel_send(
            session, sandbox, [{"recipients": ["+989121234567", "+989351234567"], "message": "ho"}]
        ).status_code
        == 200
    )
    assert len(sandbox.messages()) == 2 + 1 + 2
    assert sandbox.stats()["by_status"] == {"200": 3, "429": 2}


def test_the_guard_window_is_40_seconds_by_default_and_a_knob(session, sandbox):
    assert SandboxConfig().duplicate_window_seconds == 40.0
    sandbox.configure(duplicate_window_seconds=0.3)
    params = [{"recipients": ["+989121234567"], "message": "hi"}]
    assert ippanel_send(session, sandbox, params).status_code == 200
    assert ippanel_send(session, sandbox, params).status_code == 429
    time.sleep(0.35)
    assert ippanel_send(session, sandbox, params).status_code == 200
    # 0 turns the guard off.
    sandbox.configure(duplicate_window_seconds=0)
    assert ippanel_send(session, sandbox, params).status_code == 200
    assert len(sandbox.messages()) == 3


def test_a_request_refused_or_dropped_by_a_fault_arms_no_guard_but_a_dropped_accepted_one_does(session, sandbox):
    params = [{"recipients": ["+989121234567"], "message": "hi"}]
    sandbox.configure(send_5xx_rate=1.0)
    assert ippanel_send(session, sandbox, params).status_code == 503
    sandbox.configure(send_5xx_rate=0.0, send_drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        ippanel_send(session, sandbox, params)  # accepted, then the connection dropped
    sandbox.configure(send_drop_rate=0.0)
    assert ippanel_send(session, sandbox, params).status_code == 429  # the gateway has it already
    assert len(sandbox.messages()) == 1


def test_bitel_has_no_duplicate_guard(session, sandbox):
    assert bitel_send(session, sandbox, ["09121234567"]).status_code == 200
    assert bitel_send(session, sandbox, ["09121234567"]).status_code == 200
    assert len(sandbox.messages()) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duplicate_window_seconds": -1}, "duplicate_window_seconds must be >= 0"),
        ({"duplicate_window_seconds": "40"}, "duplicate_window_seconds must be a number"),
        ({"ippanel_names_refused": "no"}, "ippanel_names_refused must be true or false"),
    ],
)
def test_the_new_knobs_are_validated(changes, message):
    with pytest.raises(ValueError, match=message):
        SandboxConfig().updated(changes)


def test_the_command_line_sets_both_knobs_and_documents_the_refused_number():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_p2psms.sandbox", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"..{SUFFIX_REFUSED}" in result.stdout
    assert "--duplicate-window-seconds" in result.stdout
    assert "--ippanel-unnamed-refusals" in result.stdout
    from airflow_provider_p2psms.sandbox.__main__ import build_parser

    args = build_parser().parse_args(["--duplicate-window-seconds", "5", "--ippanel-unnamed-refusals"])
    assert (args.duplicate_window_seconds, args.ippanel_names_refused) == (5.0, False)
