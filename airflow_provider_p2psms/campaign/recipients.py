"""From a recipient source to ready-to-send messages: read rows, render the text, check, normalize, dedupe.

Everything is a generator, so rows stream from the source to the wire without being held in memory.
Rows are numbered from 1 in the order the source returns them; error messages use those numbers and
never show a row's values, only its field names and masked phone numbers.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any

from airflow_provider_p2psms.campaign.keyset import KeySet
from airflow_provider_p2psms.campaign.receipt import MAX_PROBLEMS
from airflow_provider_p2psms.exceptions import InvalidPhoneNumber, P2PSmsError, SmsConfigurationError, SmsInputError
from airflow_provider_p2psms.models import OutgoingSms, message_key
from airflow_provider_p2psms.utils.text import count_sms_parts, sms_encoding

if TYPE_CHECKING:
    from airflow_provider_p2psms.campaign.recording import OutcomeRecorder
    from airflow_provider_p2psms.campaign.suppression import Suppression

#: Context entries a message template may not use: a text must never carry a credential.
_HIDDEN_CONTEXT = frozenset({"conn"})
#: What :meth:`MessageBuilder._message` answers for a number on the suppression list (not a problem).
_EXCLUDED = "excluded"


def iter_rows(
    *,
    recipients: Any,
    sql: str | None,
    sql_conn_id: str | None,
    parameters: Any,
    fetch_size: int,
) -> Iterator[Any]:
    """Yield the raw rows of whichever source is set."""
    if sql is not None:
        return sql_rows(sql, sql_conn_id or "", parameters, fetch_size)
    return iter(_listed_rows(recipients))


def _listed_rows(recipients: Any) -> Iterable[Any]:
    value = recipients
    if isinstance(value, str):
        value = parse_rendered(value, "recipients")
    if isinstance(value, Mapping):
        raise SmsInputError(
            "recipients is a mapping, not a list of rows. If the upstream task returns {'rows': [...]}, "
            "pass recipients=upstream.output['rows']."
        )
    if isinstance(value, Sequence | Iterator) and not isinstance(value, bytes | str):
        return value
    raise SmsInputError(
        f"recipients must be a list of rows (dicts) or phone numbers, got {type(value).__name__}. "
        "Pass an upstream task's output, e.g. recipients=extract.output."
    )


def parse_rendered(text: str, name: str) -> Any:
    """Read back a value that Jinja rendered to a string (JSON, or a Python literal) for argument ``name``."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    raise SmsInputError(
        f"{name} is a string that is neither JSON nor a Python literal. Pass the upstream task's output "
        f"itself ({name}=upstream.output) rather than a rendered template, or render it as JSON "
        "({{ ti.xcom_pull('upstream') | tojson }})."
    )


def sql_rows(
    sql: str,
    sql_conn_id: str,
    parameters: Any,
    fetch_size: int,
    *,
    what: str = "recipients query",
    conn_arg: str = "sql_conn_id",
) -> Iterator[dict[str, Any]]:
    """
    Stream a query's rows as dicts, ``fetch_size`` at a time, on any common-sql connection.

    :param what: the query, as errors name it (``"recipients query"``, ``"exclude_sql query"``).
    :param conn_arg: the argument that named the connection, as errors name it.
    """
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(sql_conn_id).get_hook()
    if not isinstance(hook, DbApiHook):
        raise SmsConfigurationError(
            f"Connection '{sql_conn_id}' ({conn_arg}) is not a SQL database connection: its hook is "
            f"{type(hook).__name__}. Use a connection whose provider has a common-sql hook (sqlite, postgres, ...)."
        )

    def failed(error: Exception) -> SmsInputError:
        return SmsInputError(
            f"The {what} on connection '{sql_conn_id}' failed: {type(error).__name__}: {error}. Nothing was sent."
        )

    with closing(hook.get_conn()) as connection, closing(connection.cursor()) as cursor:
        try:
            if parameters is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, parameters)
        except Exception as error:
            raise failed(error) from None
        if cursor.description is None:
            raise SmsInputError(
                f"The {what} on connection '{sql_conn_id}' returned no result set; it must be a SELECT."
            )
        columns = [column[0] for column in cursor.description]
        read = 0
        while True:
            try:
                chunk = cursor.fetchmany(fetch_size)
            except Exception as error:
                if not read:
                    raise failed(error) from None
                # Rows read so far may have been sent already: say so, and let Airflow retry (the
                # checkpoint keeps the retry from sending them again); a lost connection is transient.
                raise P2PSmsError(
                    f"Reading the {what}'s rows from connection '{sql_conn_id}' failed after {read} rows: "
                    f"{type(error).__name__}: {error}. Messages accepted before are checkpointed, so a retry "
                    "does not send them again."
                ) from None
            if not chunk:
                return
            read += len(chunk)
            for values in chunk:
                yield dict(zip(columns, values, strict=False))


class MessageBuilder:
    """
    Turn rows into (message key, message) pairs, counting and reporting what it leaves out.

    :param template: the compiled Jinja template of the text (``StrictUndefined``).
    :param context: the task context, available to the template beside ``row``.
    :param normalize: the gateway's number normalizer.
    :param phone_field: the row field holding the number.
    :param max_parts: the most SMS parts a text may take.
    :param fail_on_invalid: raise on the first invalid row instead of skipping it.
    :param key_field: the row field that identifies a row (e.g. a customer id), carried into each
        message (``OutgoingSms.row_key``) and every problem line. A row without it, or with a key an
        earlier row had, is invalid: it is never sent.
    :param recorder: where rows that are left out are written (the outcomes table), when set.
    :param suppression: numbers that get no text (:mod:`~.suppression`): their rows are ``excluded``.
    :param footer: a line appended to every text (e.g. the opt-out rule ``لغو۱۱``), counted in its parts.
    """

    def __init__(
        self,
        *,
        template: Any,
        context: Mapping[str, Any],
        normalize: Callable[[Any], str],
        phone_field: str,
        max_parts: int,
        fail_on_invalid: bool,
        key_field: str | None = None,
        recorder: OutcomeRecorder | None = None,
        suppression: Suppression | None = None,
        footer: str | None = None,
    ) -> None:
        self._template = template
        # The template's globals and the context, merged once: each row only sets "row" in it, where
        # Template.render() would copy them all again for every row.
        self._variables = {
            **template.globals,
            **{key: value for key, value in context.items() if key not in _HIDDEN_CONTEXT},
        }
        self._normalize = normalize
        self._phone_field = phone_field
        self._max_parts = max_parts
        self._fail_on_invalid = fail_on_invalid
        self._key_field = key_field
        self._recorder = recorder
        self._suppression = suppression
        self._footer = "\n" + footer.strip() if footer and footer.strip() else ""
        # Message keys and row-key hashes seen so far: one per row, so in 8.5 bytes each, not a set's 70.
        self._seen = KeySet(unsigned=True)
        self._seen_keys = KeySet(unsigned=True)
        self.requested = 0
        self.invalid = 0
        self.duplicate = 0
        self.excluded = 0
        self.problems: list[str] = []

    def build(self, rows: Iterable[Any]) -> Iterator[tuple[int, OutgoingSms]]:
        """Yield one (key, message) per valid, new (number, text) pair, in row order."""
        keyed = self._key_field is not None
        seen = self._seen.add  # whether the key is new
        for number, row in enumerate(rows, start=1):
            self.requested = number
            row_key: str | None = None
            if keyed:
                row_key, problem = self._row_key(row)
                if problem:
                    # A repeated key names the row of the first one in the outcomes table: not this row's.
                    self._invalid(number, problem, row_key, record=False)
                    continue
            problem, message = self._message(number, row, row_key)
            if message is None:
                if problem == _EXCLUDED:
                    self.excluded += 1
                else:
                    self._invalid(number, problem, row_key)
                continue
            key = message_key(message.recipient, message.text)
            if not seen(key):
                self.duplicate += 1
                if self._recorder is not None and row_key is not None:
                    reason = "the same number and text as an earlier row: sent once"
                    self._recorder.left_out(row_key, "duplicate", reason, message.recipient)
                continue
            yield key, message
        if self._recorder is not None:
            self._recorder.finish_thread()

    def _row_key(self, row: Any) -> tuple[str | None, str]:
        """The row's key, and a problem when it has none or repeats one (the key is returned to name the row)."""
        field = self._key_field
        value = row.get(field) if isinstance(row, Mapping) else None
        if value is None or isinstance(value, bool) or (key := str(value).strip()) == "":
            if isinstance(row, Mapping) and field not in row:
                names = ", ".join(map(str, row)) or "none"
                return None, f"has no field '{field}' (key_field; its fields: {names})"
            return None, f"has no key: its field '{field}' (key_field) is empty"
        if not self._seen_keys.add(message_key(field or "", key)):
            return key, f"duplicate key: an earlier row has the key {key!r} (key_field '{field}'); not sent"
        return key, ""

    def _message(self, number: int, row: Any, row_key: str | None = None) -> tuple[str, OutgoingSms | None]:
        field = self._phone_field
        if isinstance(row, Mapping):
            if field not in row:
                names = ", ".join(map(str, row)) or "none"
                return f"has no field '{field}' (its fields: {names}); set phone_field to the right one", None
            fields: Mapping[str, Any] = row
        elif isinstance(row, str | int | float) and not isinstance(row, bool):
            fields = {field: row}
        else:
            return f"is a {type(row).__name__}, not a row (mapping) or a phone number", None
        try:
            recipient = self._normalize(fields[field])
        except InvalidPhoneNumber as error:
            return f"field '{field}' {error.masked} {error.reason}", None
        if self._suppression is not None and self._suppression.covers(recipient):
            if self._recorder is not None and row_key is not None:
                self._recorder.left_out(row_key, "excluded", "on the suppression list: not sent", recipient)
            return _EXCLUDED, None
        text = self._render(row_label(number, row_key), fields).strip()
        if not text:
            return "the message rendered empty", None
        text += self._footer
        parts = count_sms_parts(text)
        if parts > self._max_parts:
            return (
                f"the message needs {parts} SMS parts ({len(text)} characters, {sms_encoding(text)}); "
                f"max_parts is {self._max_parts}"
            ), None
        return "", OutgoingSms(recipient, text, number, row_key, parts)

    def _render(self, row: str, fields: Mapping[str, Any]) -> str:
        from jinja2 import TemplateError, UndefinedError

        template = self._template
        self._variables["row"] = fields
        try:
            # What Template.render() does, less its copy of the variables.
            return str(
                template.environment.concat(
                    template.root_render_func(template.new_context(self._variables, shared=True))
                )
            )
        except UndefinedError as error:
            names = ", ".join(map(str, fields))
            raise SmsInputError(
                f"{row}: the message template uses an undefined value ({error.message}). The row's fields "
                f"are: {names}. Fix the template, or give a fallback like {{{{ row.name | default('') }}}}."
            ) from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as error:
            raise SmsInputError(f"{row}: rendering the message failed: {type(error).__name__}: {error}.") from None

    def _invalid(self, number: int, problem: str, row_key: str | None = None, *, record: bool = True) -> None:
        self.invalid += 1
        text = f"{row_label(number, row_key)}: {problem}."
        if self._fail_on_invalid:
            raise SmsInputError(f"{text} on_invalid='fail', so nothing was sent.")
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        if record and self._recorder is not None and row_key is not None:
            self._recorder.left_out(row_key, "invalid", problem)


def row_label(number: int, row_key: str | None) -> str:
    """How a problem line names a row: ``Row 12``, or ``Row 12 (key 'C-77')`` once rows have keys."""
    return f"Row {number}" if row_key is None else f"Row {number} (key {row_key!r})"


def text_parts(message: OutgoingSms) -> int:
    """The SMS parts of a message's text, as the builder counted them (or counted now)."""
    return message.parts or count_sms_parts(message.text)


def compile_template(message: str, environment: Any = None) -> Any:
    """
    Compile the message template with ``StrictUndefined``, so that an undefined value is an error naming the row.

    :param environment: a Jinja environment to compile in (the operator passes the DAG's, with its
        search path); default a sandboxed one. A name ending in ``.j2``/``.txt`` is loaded from its search path.
    """
    from jinja2 import StrictUndefined, TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    if environment is None:
        environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    else:
        environment = environment.overlay(undefined=StrictUndefined)
    try:
        if message.endswith((".j2", ".txt")):
            return environment.get_template(message)
        return environment.from_string(message)
    except TemplateSyntaxError as error:
        raise SmsInputError(
            f"The message template has a syntax error at line {error.lineno}: {error.message}. Nothing was sent."
        ) from None


def spooled(messages: Iterator[tuple[int, OutgoingSms]]) -> Iterator[tuple[int, OutgoingSms]]:
    """Build and check every message before yielding the first, keeping them on disk, not in memory."""
    import tempfile

    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        for key, message in messages:
            fields = [key, message.recipient, message.text, message.row, message.row_key, message.parts]
            spool.write(json.dumps(fields, ensure_ascii=False))
            spool.write("\n")
        spool.seek(0)
        for line in spool:
            key, recipient, text, row, row_key, parts = json.loads(line)
            yield key, OutgoingSms(recipient, text, row, row_key, parts)
