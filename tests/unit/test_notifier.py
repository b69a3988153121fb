"""P2PSmsNotifier's numbers and text, called as Airflow calls a callback, against the sandbox."""

from __future__ import annotations

from airflow_provider_p2psms.notifications.p2p_sms import P2PSmsNotifier


def test_a_list_rendered_to_a_string_is_read_back_as_numbers(sms_connections):
    """``phone_numbers="{{ var.value.oncall }}"`` renders a list to its text; it must not become one bad number."""
    P2PSmsNotifier(
        sms_conn_id="bitel_default",
        phone_numbers="['0912 123 4567', '+989357654321', '09121234567']",
        message="disk full",
    ).notify({})
    assert sorted(m["recipient"] for m in sms_connections.messages()) == ["09121234567", "09357654321"]


def test_a_text_that_fits_is_sent_whole(sms_connections):
    P2PSmsNotifier(sms_conn_id="bitel_default", phone_numbers="09121234567", message="ok " * 50, max_parts=1).notify({})
    assert [m["text"] for m in sms_connections.messages()] == [("ok " * 50).strip()]


def test_a_rendered_string_that_is_not_a_list_is_logged_not_raised(sms_connections):
    P2PSmsNotifier(sms_conn_id="bitel_default", phone_numbers="[not a list", message="x").notify({})
    assert sms_connections.messages() == []
