"""Opt-out replies recognized in the spellings phones send them in, and the opt-out table's statements."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_p2psms.campaign.opt_out_table import (
    COLUMNS,
    OPT_OUTS_DDL,
    OptOut,
    OptOutTable,
    merge,
    opt_outs_ddl,
    upsert_sql,
)
from airflow_provider_p2psms.exceptions import SmsConfigurationError
from airflow_provider_p2psms.operators.opt_out_replies import P2PSmsOptOutRepliesOperator
from airflow_provider_p2psms.utils.opt_out_words import DEFAULT_OPT_OUT_WORDS, OptOutWords, normalize_reply

ZWNJ = "\u200c"
RLM = "\u200f"


@pytest.mark.parametrize(
    ("reply", "word"),
    [
        ("11", "11"),
        ("۱۱", "11"),  # Persian digits
        ("١١", "11"),  # Arabic-Indic digits
        ("１１", "11"),  # full-width digits
        (" 11 \n", "11"),
        ("1 1", "11"),
        ("لغو", "لغو"),
        ("  لغو  ", "لغو"),
        ("لغو.", "لغو"),
        ("لغو!", "لغو"),
        ("لـغـو", "لغو"),  # tatweel
        (f"{RLM}لغو{RLM}", "لغو"),  # direction marks around it
        ("لغو11", "لغو11"),
        ("لغو۱۱", "لغو11"),
        ("لغو ۱۱", "لغو11"),
        (f"لغو{ZWNJ}۱۱", "لغو11"),
        ("لغو - 11", "لغو11"),
        ("انصراف", "انصراف"),
        ("STOP", "stop"),
        ("Stop.", "stop"),
        ("unsubscribe", "unsubscribe"),
    ],
)
def test_default_words_recognize_the_spellings_phones_send(reply: str, word: str) -> None:
    matched = OptOutWords().match(reply)
    assert matched is not None
    assert normalize_reply(matched) == normalize_reply(word)


@pytest.mark.parametrize(
    "reply",
    ["", "   ", "1", "111", "12", "لغو سفارش", "نه لغو نکنید", "سلام", "stopp", "please stop", "11 12", "۱۱۱"],
)
def test_other_replies_are_not_opt_outs(reply: str) -> None:
    assert OptOutWords().match(reply) is None


def test_arabic_yeh_and_kaf_match_the_persian_letters() -> None:
    words = OptOutWords(["کنسل", "پیام نمی خواهم"])
    assert words.match("كنسل") == "کنسل"  # Arabic kaf U+0643
    assert words.match("پيام نمي خواهم") == "پیام نمی خواهم"  # Arabic yeh U+064A
    assert words.match("پیام نمى خواهم") == "پیام نمی خواهم"  # alef maksura U+0649
    assert words.match(f"پیام نمی{ZWNJ}خواهم") == "پیام نمی خواهم"  # ZWNJ, as Persian keyboards write it
    assert words.match("پیامنمیخواهم") == "پیام نمی خواهم"


def test_vowel_marks_and_hamza_forms_are_ignored() -> None:
    assert normalize_reply("لَغْو") == "لغو"
    assert normalize_reply("إنصراف") == normalize_reply("انصراف")
    assert normalize_reply("ة") == "ه"


def test_configured_words_replace_the_default_and_keep_their_spelling() -> None:
    words = OptOutWords(["STOP", "۰"])
    assert words.match("stop") == "STOP"
    assert words.match("0") == "۰"
    assert words.match("11") is None
    assert OptOutWords("لغو").match("لغو") == "لغو"  # one word given as a string


def test_the_first_spelling_of_a_word_wins() -> None:
    words = OptOutWords(["لغو11", "لغو ۱۱"])
    assert words.forms == {"لغو11"}
    assert words.match("لغو ۱۱") == "لغو11"


def test_default_words() -> None:
    assert {"11", "لغو", "لغو11", "لغو ۱۱", "stop"} <= set(DEFAULT_OPT_OUT_WORDS)
    assert OptOutWords().forms == {"11", "لغو", "لغو11", "انصراف", "stop", "unsubscribe"}


@pytest.mark.parametrize("words", [[], ["  "], ["..."], [11]])
def test_unusable_words_are_refused(words: list[object]) -> None:
    with pytest.raises(ValueError):
        OptOutWords(words)


def test_the_operator_refuses_bad_arguments_when_the_dag_is_parsed() -> None:
    with pytest.raises(SmsConfigurationError) as raised:
        P2PSmsOptOutRepliesOperator(task_id="t", sms_conn_id="ippanel_default", sql_conn_id="", opt_out_words=["!"])
    message = str(raised.value)
    assert "opt_out_words" in message
    assert "sql_conn_id" in message
    with pytest.raises(SmsConfigurationError, match="at most 64 characters"):
        P2PSmsOptOutRepliesOperator(task_id="t", sms_conn_id="i", sql_conn_id="db", opt_out_words=["x" * 65])


# ---------------------------------------------------------------- the table's statements

T0 = datetime(2026, 1, 31, 8, 0, tzinfo=timezone.utc)


def opt_out(number: str, minutes: int, keyword: str = "11", reply_id: int = 1) -> OptOut:
    return OptOut(number, "ippanel", keyword, T0 + timedelta(minutes=minutes), str(reply_id), "+983000505")


def test_merge_keeps_one_row_per_number_with_its_first_and_last_reply() -> None:
    rows = merge([opt_out("+989121234567", 5, "لغو", 7), opt_out("+989121234567", 1, "11", 3), opt_out("+9893", 2)])
    by_number = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in rows}
    assert by_number["+989121234567"] == {
        "number": "+989121234567",
        "gateway": "ippanel",
        "line": "+983000505",
        "keyword": "لغو",
        "first_seen": "2026-01-31T08:01:00.000000Z",
        "last_seen": "2026-01-31T08:05:00.000000Z",
        "last_reply_id": "7",
    }
    assert len(rows) == 2


def test_ddl_declares_the_number_as_the_key() -> None:
    assert "number VARCHAR(32) NOT NULL PRIMARY KEY" in OPT_OUTS_DDL
    assert OPT_OUTS_DDL.startswith("CREATE TABLE IF NOT EXISTS p2psms_opt_outs (")
    assert opt_outs_ddl("crm.opt_outs", "mysql").endswith(") DEFAULT CHARSET=utf8mb4")
    with pytest.raises(SmsConfigurationError, match="Opt-out table name"):
        opt_outs_ddl("x; DROP TABLE y")
    with pytest.raises(SmsConfigurationError, match="Opt-out table name"):
        OptOutTable("db", "bad name")


def test_upserts_merge_times_and_follow_the_latest_reply_on_each_database() -> None:
    sqlite = upsert_sql("t", "sqlite", "?")
    assert sqlite.startswith("INSERT INTO t AS stored (number, gateway, line, keyword, first_seen, last_seen, ")
    assert "ON CONFLICT (number) DO UPDATE SET" in sqlite
    assert "first_seen = MIN(stored.first_seen, excluded.first_seen)" in sqlite
    assert "last_seen = MAX(stored.last_seen, excluded.last_seen)" in sqlite
    assert "keyword = CASE WHEN excluded.last_seen >= stored.last_seen THEN excluded.keyword" in sqlite
    postgres = upsert_sql("t", "postgresql", "%s")
    assert "LEAST(stored.first_seen, excluded.first_seen)" in postgres
    assert "GREATEST(stored.last_seen, excluded.last_seen)" in postgres
    assert postgres.count("%s") == len(COLUMNS)
    mysql = upsert_sql("t", "mysql", "%s")
    assert "ON DUPLICATE KEY UPDATE" in mysql
    # MySQL assigns left to right: the guards on the stored last_seen come before it is changed.
    assert mysql.index("keyword = IF(VALUES(last_seen) >= last_seen") < mysql.index("last_seen = GREATEST(")
    assert mysql.rstrip().endswith("last_seen = GREATEST(last_seen, VALUES(last_seen))")
