"""OpenLineage facets of a send: the table its recipients come from, the outcomes table, and what it sent.

When the ``apache-airflow-providers-openlineage`` provider is installed and configured, its listener calls
these methods on the send operator. Without it nothing here runs, and nothing of OpenLineage is imported
until it does, so the operator costs DAG parsing no more than before.

* Inputs: the tables ``sql`` reads on ``sql_conn_id``, found by OpenLineage's SQL parser the way
  common-sql's ``SQLExecuteQueryOperator`` finds them (namespace, database and schema from the connection's
  hook). A connection whose hook gives OpenLineage no database information (SQLite) gets a namespace named
  after its type and host, e.g. ``sqlite:///data/crm.db``. Rows given as ``recipients`` are no dataset.
* Output: the outcomes table (``outcomes_conn_id`` / ``outcomes_table``), named by the same rules; none in
  a dry run, which writes nothing.
* Run facet ``p2psmsSend`` on completion: the receipt's counts and cost (requested, sent, resumed, invalid,
  duplicate, excluded, uncertain, rejected, parts, price) and the SMS connection. Never a phone number or a row value.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import Dataset

#: The run facet's name in OpenLineage events.
RUN_FACET = "p2psmsSend"

#: The receipt counts the run facet carries: totals, never a recipient.
_COUNTS = ("requested", "sent", "resumed", "invalid", "duplicate", "excluded", "uncertain", "rejected", "parts")


class LineageMixin:
    """
    ``get_openlineage_facets_on_start`` and ``get_openlineage_facets_on_complete`` for the send operator.

    Reads the operator's ``sql``, ``sql_conn_id``, ``outcomes_conn_id``, ``outcomes_table``, ``dry_run`` and
    ``sms_conn_id``; the try leaves the receipt's counts in :attr:`_lineage_counts`.
    """

    sms_conn_id: str
    sql: str | None
    sql_conn_id: str | None
    outcomes_conn_id: str | None
    outcomes_table: str | None
    #: The counts of the receipt the last try built (``operators.sending.send``); ``None`` before.
    _lineage_counts: Mapping[str, Any] | None = None

    def get_openlineage_facets_on_start(self) -> OperatorLineage | None:
        """The input tables of ``sql`` and the outcomes table: what the send reads and writes."""
        try:
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        from airflow_provider_p2psms.utils.rendered import as_bool

        lineage: OperatorLineage = OperatorLineage()
        if self.sql_conn_id and isinstance(self.sql, str) and self.sql.strip():
            source = _sql_lineage(self.sql_conn_id, self.sql)
            if source is not None:
                lineage = source
        dry_run = as_bool(getattr(self, "dry_run", False), "dry_run")
        if self.outcomes_conn_id and not dry_run:
            from airflow_provider_p2psms.campaign.outcome_schema import DEFAULT_TABLE

            table = _sql_lineage(self.outcomes_conn_id, f"SELECT * FROM {self.outcomes_table or DEFAULT_TABLE}")
            if table is not None:
                lineage.outputs.extend(table.inputs)
        return lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """:meth:`get_openlineage_facets_on_start`, with the ``p2psmsSend`` run facet of the try's receipt."""
        lineage = self.get_openlineage_facets_on_start()
        if lineage is not None and self._lineage_counts is not None:
            lineage.run_facets[RUN_FACET] = send_run_facet(self.sms_conn_id, self._lineage_counts)
        return lineage


def send_run_facet(sms_conn_id: str, counts: Mapping[str, Any]) -> Any:
    """The ``p2psmsSend`` run facet of a receipt's ``counts``."""
    price = counts.get("price")
    return _send_facet_class()(
        sms_conn_id=sms_conn_id,
        **{name: int(counts.get(name) or 0) for name in _COUNTS},
        price=None if price is None else float(price),
    )


@functools.cache
def _send_facet_class() -> type:
    """The facet's class, made on first use: its base class is OpenLineage's, imported only then."""
    from attrs import define
    from openlineage.client.facet_v2 import RunFacet

    @define
    class P2PSmsSendRunFacet(RunFacet):
        """What one try of a send task sent: counts and cost (the sum of the prices the gateway gave at send)."""

        sms_conn_id: str
        requested: int
        sent: int
        resumed: int
        invalid: int
        duplicate: int
        excluded: int
        uncertain: int
        rejected: int
        parts: int
        price: float | None

    return P2PSmsSendRunFacet


def _sql_lineage(conn_id: str, sql: str) -> OperatorLineage | None:
    """
    The tables ``sql`` reads and writes on ``conn_id``, with OpenLineage's SQL parser; ``None`` if the
    connection has no SQL hook.
    """
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.providers.openlineage.sqlparser import get_openlineage_facets_with_sql
    from airflow.providers.openlineage.utils.utils import should_use_external_connection
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
    if not isinstance(hook, DbApiHook):
        return None
    lineage = get_openlineage_facets_with_sql(
        hook=hook,
        sql=sql,
        conn_id=conn_id,
        database=None,
        use_connection=should_use_external_connection(hook),
    )
    return lineage if lineage is not None else _parsed_lineage(hook, connection, sql)


def _parsed_lineage(hook: Any, connection: Any, sql: str) -> OperatorLineage:
    """
    Lineage of ``sql`` for a hook that gives OpenLineage no database information: the parser's tables, in
    a namespace named after the connection's type and host (``sqlite:///data/crm.db``).
    """
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.providers.openlineage.sqlparser import SQLParser
    from openlineage.client.event_v2 import Dataset
    from openlineage.client.facet_v2 import sql_job

    authority = f"{connection.host or ''}{f':{connection.port}' if connection.port else ''}"
    namespace = f"{connection.conn_type}://{authority}"
    parser = SQLParser(dialect=hook.get_openlineage_database_dialect(connection))
    parsed = parser.parse(parser.split_sql_string(sql))

    def datasets(tables: Any) -> list[Dataset]:
        return [Dataset(namespace=namespace, name=table.qualified_name) for table in tables]

    return OperatorLineage(
        inputs=datasets(parsed.in_tables) if parsed else [],
        outputs=datasets(parsed.out_tables) if parsed else [],
        job_facets={"sql": sql_job.SQLJobFacet(query=SQLParser.normalize_sql(sql))},
    )
