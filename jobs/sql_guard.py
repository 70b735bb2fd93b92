"""Read-only SQL for `vidlake sql`, `curate --sql`, `curate --where` and `report --where`, decided
from Spark's own parse.

The text is parsed with the session's SQL parser, the parser `spark.sql` and `F.expr` use, and
the whole unresolved tree is walked: every plan node, every expression, every plan inside an
expression (`EXISTS (SELECT ...)`) and every CTE. A plan node must be one a query is made of
(`QUERY_NODES`; `vidlake sql` also takes the read-only `METADATA_NODES`: SHOW, DESCRIBE, EXPLAIN);
anything else, a command, a write, `TRANSFORM ... USING` (runs a program), a SQL script, is refused
with its name. Functions that call arbitrary Java or read files named in their arguments
(`REFUSED_FUNCTIONS`) are refused wherever they appear. Only then is the same text handed to Spark,
which parses it the same way again.

Queries on raw file paths (``text.`/etc/passwd` ``) are off in every vidlake session
(`spark.sql.runSQLOnFiles`, jobs/session.py), and a relation named `format.`path`` is refused
here, save one narrow case: ``delta.`<lake>/<table>` ``. That one, and a lake table read with
`VERSION AS OF` / `TIMESTAMP AS OF` (which Spark refuses on the temporary views the lake's tables
are), come back as `TableReference`s with their place in the text, for jobs/views.py to point at a
view of that table's snapshot (`Statement.rewritten`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from py4j.java_collections import JavaArray, JavaList, JavaMap, JavaSet
from py4j.java_gateway import JavaObject
from py4j.protocol import Py4JJavaError
from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from jobs.output import QueryError, reported, spark_error_line
from schemas.tables import TABLES

FILE_QUERIES_CONF = "spark.sql.runSQLOnFiles"
_LOGICAL = "org.apache.spark.sql.catalyst.plans.logical."
_ANALYSIS = "org.apache.spark.sql.catalyst.analysis."
_COMMAND = "org.apache.spark.sql.execution.command."

# What a parsed query is made of: relations, joins, projections, filters, aggregates, windows,
# set operations, CTEs (recursive ones too), time travel (VERSION/TIMESTAMP AS OF), VALUES, hints,
# sampling, pivots, generators, the pipe syntax (|>) and the table functions of ALLOWED_TABLE_FUNCTIONS.
QUERY_NODES = frozenset(
    [_LOGICAL + name for name in (
        "Aggregate", "Deduplicate", "Distinct", "Except", "Expand", "Filter", "Generate", "GlobalLimit",
        "Intersect", "Join", "LateralJoin", "LimitAll", "LocalLimit", "LocalRelation", "Offset", "OneRowRelation",
        "Pivot", "Project", "RebalancePartitions", "Repartition", "RepartitionByExpression", "Sample", "Sort",
        "SubqueryAlias", "Tail", "Union", "Unpivot", "UnresolvedHint", "UnresolvedWith", "Window",
        "WithWindowDefinition",
    )]
    + [_ANALYSIS + name for name in (
        "RelationTimeTravel", "UnresolvedHaving", "UnresolvedInlineTable", "UnresolvedQualify", "UnresolvedRelation",
        "UnresolvedSubqueryColumnAliases", "UnresolvedTVFAliases", "UnresolvedTableValuedFunction",
    )]
    + ["org.apache.spark.sql.catalyst.expressions.PipeOperator"]  # a plan node of the |> syntax
)
# Read-only statements `vidlake sql` runs besides queries, and the leaves they name things with.
# An EXPLAIN or DESCRIBE QUERY holds a plan, which is walked by the same rules.
METADATA_NODES = frozenset(
    [_LOGICAL + name for name in (
        "DescribeColumn", "DescribeFunction", "DescribeRelation", "ShowColumns", "ShowFunctions", "ShowTables",
        "ShowViews",
    )]
    + [_COMMAND + name for name in ("DescribeQueryCommand", "ExplainCommand", "ShowNamespacesCommand")]
    + [_ANALYSIS + name for name in (
        "CurrentNamespace$", "UnresolvedFunctionName", "UnresolvedNamespace", "UnresolvedTableOrView",
    )]
)
METADATA_STATEMENTS = "SHOW TABLES/VIEWS/COLUMNS/FUNCTIONS, DESCRIBE and EXPLAIN"
# reflect/java_method/try_reflect call any static Java method; the protobuf functions load a Java
# class named by their message argument or read a descriptor file; the avro functions read a schema
# from the path in their `avroSchemaUrl` option, from_xml/schema_of_xml an XSD from `rowValidationXSDPath`.
REFUSED_FUNCTIONS = frozenset({
    "reflect", "java_method", "try_reflect", "from_protobuf", "to_protobuf", "from_avro", "to_avro",
    "schema_of_avro", "from_xml", "schema_of_xml",
})
# Spark's built-in table functions that only compute rows (python_worker_logs reads worker logs).
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "explode", "explode_outer", "inline", "inline_outer", "posexplode", "posexplode_outer",
    "json_tuple", "stack", "variant_explode", "variant_explode_outer", "sql_keywords", "collations",
})
# Parsed nodes named for what they do, in refusals.
_DESCRIPTIONS = {
    "InsertIntoDir": "INSERT ... DIRECTORY (a write)",
    "InsertIntoStatement": "INSERT (a write)",
    "CreateTableAsSelect": "CREATE TABLE ... AS SELECT (a write)",
    "ScriptTransformation": "TRANSFORM ... USING (runs a program)",
    "CompoundBody": "a SQL script (BEGIN ... END)",
    "SetCommand": "SET",
}


@dataclass(frozen=True)
class TableReference:
    """A lake table named in a statement the way Spark users name Delta tables, which the lake's
    temporary views cannot answer themselves: `clips VERSION AS OF 3`, `clips TIMESTAMP AS OF
    '2026-12-03 10:00:00'` or ``delta.`/lake/clips` `` (with or without a version).

    `start`..`stop` (inclusive) is the name and its temporal clause in the statement's text;
    `timestamp` is the text of the timestamp expression; `aliased`: the text gives it an alias."""

    name: tuple[str, ...]
    start: int
    stop: int
    version: str | None = None
    timestamp: str | None = None
    aliased: bool = False

    @property
    def path(self) -> str | None:
        """The path of a ``delta.`path` `` reference; None for a table name."""
        return self.name[1] if len(self.name) == 2 else None


@dataclass(frozen=True)
class Statement:
    """A statement that passed check_statement: its text (as Spark parsed it) and its lake references."""

    text: str
    references: tuple[TableReference, ...] = ()

    def rewritten(self, views: Mapping[TableReference, str]) -> str:
        """The text with each reference replaced by its view in `views`, keeping the name it had
        as the qualifier of its columns (`clips.clip_id`) where it had no alias of its own."""
        text = self.text
        for ref in sorted(self.references, key=lambda r: r.start, reverse=True):
            replacement = quoted(views[ref])
            if not ref.aliased and (ref.version is not None or ref.timestamp is not None):
                replacement += f" AS {quoted(ref.name[-1])}"
            text = text[:ref.start] + replacement + text[ref.stop + 1:]
        return text


def quoted(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def check_statement(spark: SparkSession, sql: str, what: str, metadata: bool = False) -> Statement:
    """Refuses `sql` (QueryError naming `what` and the reason) unless Spark parses it as one query,
    or, with `metadata`, one of METADATA_STATEMENTS; returns it with the lake references it holds."""
    if not sql.strip():
        raise QueryError(f"{what}: the SQL statement is empty")
    parser = _parser(spark, what)
    plan = _parsed(lambda: parser.parsePlan(sql), what)
    walker = _Walker(spark, what, QUERY_NODES | METADATA_NODES if metadata else QUERY_NODES)
    walker.walk(plan)
    return Statement(_parsed_text(plan, sql), walker.references())


def condition_column(spark: SparkSession, condition: str, what: str = "--where") -> Column:
    """`condition` as a Column, once Spark parsed it as one boolean expression holding only what a
    query may (its subqueries are queries by `check_statement`'s rules)."""
    if not condition.strip():
        raise QueryError(f"{what} is empty; give a condition such as 'aesthetic >= 4.5'")
    parser = _parser(spark, what)
    expression = _parsed(lambda: parser.parseExpression(condition), what)
    walker = _Walker(spark, what, QUERY_NODES)
    walker.walk(expression)
    if walker.references():
        raise QueryError(f"{what}: time travel (VERSION/TIMESTAMP AS OF) and delta.`path` are read by "
                         "`vidlake sql` and `curate --sql`, not in a condition")
    return F.expr(condition)


def _parser(spark: SparkSession, what: str) -> Any:
    """The session's SQL parser, in a session where SQL cannot read raw file paths (the walk
    cannot tell ``text.`/etc/passwd` `` from a table in a catalog named `text`)."""
    jsession = getattr(spark, "_jsparkSession", None)
    if jsession is None:
        raise QueryError(f"{what}: checking SQL needs a classic Spark session (this one is Spark Connect)")
    if spark.conf.get(FILE_QUERIES_CONF, "true").lower() != "false":
        raise QueryError(f"{what}: this Spark session runs SQL on raw file paths; vidlake runs SQL only with "
                         f"{FILE_QUERIES_CONF}=false (as jobs/session.py builds its sessions)")
    return jsession.sessionState().sqlParser()


def _parsed_text(plan: JavaObject, sql: str) -> str:
    """The text the parser read, which the positions in its plan count in (Spark substitutes
    `${...}` variables before parsing)."""
    text = plan.origin().sqlText()
    return text.get() if text.isDefined() else sql


def _parsed(parse: Callable[[], Any], what: str) -> Any:
    """The parsed tree; a parse error is one line (PySpark raises it as a ParseException, or as
    the bare Java error where its handler is not installed)."""
    try:
        return reported(parse, what)
    except Py4JJavaError as err:
        raise QueryError(f"{what}: {spark_error_line(Exception(err.java_exception.getMessage()))}") from None


class _Walker:
    """Visits every tree node reachable from a parsed plan or expression through its constructor
    fields (children, expressions, CTE definitions, window definitions, plans in subqueries), so
    nothing a node holds escapes the rules, whatever field it sits in."""

    def __init__(self, spark: SparkSession, what: str, allowed_plans: frozenset[str]):
        jvm = spark.sparkContext._jvm
        loader = jvm.Thread.currentThread().getContextClassLoader()
        self._types = {kind: jvm.java.lang.Class.forName(name, False, loader) for kind, name in (
            ("plan", _LOGICAL + "LogicalPlan"),
            ("expression", "org.apache.spark.sql.catalyst.expressions.Expression"),
            ("product", "scala.Product"),
            ("iterable", "scala.collection.IterableOnce"),
        )}
        self._kinds: dict[str, str] = {}
        self._what = what
        self._allowed = allowed_plans
        self._found: list[TableReference] = []
        self._travelling: set[int] = set()  # where the relations of RelationTimeTravel nodes start
        self._aliased: set[int] = set()  # where the table references that have an alias start

    def references(self) -> tuple[TableReference, ...]:
        """The lake references found (`TableReference`), once the walk is done."""
        return tuple(TableReference(r.name, r.start, r.stop, r.version, r.timestamp, r.start in self._aliased)
                     for r in self._found)

    def walk(self, root: JavaObject) -> None:
        pending = [root]
        while pending:
            node = pending.pop()
            if isinstance(node, JavaMap):
                continue  # relation options (checked on the relation) and other string maps
            if isinstance(node, (JavaArray, JavaList, JavaSet)):
                pending.extend(node)
                continue
            if not isinstance(node, JavaObject):
                continue  # strings, numbers, booleans
            name = node.getClass().getName()
            kind = self._kind(node, name)
            if kind == "plan":
                self._check_plan(node, name)
            elif kind == "expression":
                self._check_expression(node, name)
            if kind == "iterable":
                pending.extend(_scala_items(node.iterator()))
            elif kind != "opaque":
                pending.extend(_scala_items(node.productIterator()))

    def _kind(self, node: JavaObject, name: str) -> str:
        if name not in self._kinds:
            self._kinds[name] = next((k for k, t in self._types.items() if t.isInstance(node)), "opaque")
        return self._kinds[name]

    def _check_plan(self, plan: JavaObject, name: str) -> None:
        simple = name.rsplit(".", 1)[-1]
        if name not in self._allowed:
            described = _DESCRIPTIONS.get(simple, simple)
            raise QueryError(f"{self._what}: only read-only queries run here, and this statement holds {described}")
        if simple == "UnresolvedRelation":
            parts = tuple(_scala_items(plan.multipartIdentifier().iterator()))
            relation = ".".join(parts)
            if not plan.options().isEmpty():
                raise QueryError(f"{self._what}: table options (WITH (...)) on {relation} are not accepted here")
            if plan.isStreaming():
                raise QueryError(f"{self._what}: streaming reads of {relation} are not accepted here")
            self._check_path(plan, parts)
        elif simple == "RelationTimeTravel":
            self._note_time_travel(plan)
        elif simple == "SubqueryAlias" and plan.origin().startIndex().isDefined():
            self._aliased.add(plan.origin().startIndex().get())
        elif simple == "UnresolvedTableValuedFunction":
            function = _last(plan.name())
            if function not in ALLOWED_TABLE_FUNCTIONS:
                raise QueryError(f"{self._what}: the table function {function} is not accepted here "
                                 f"(only {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))})")

    def _check_path(self, relation: JavaObject, parts: tuple[str, ...]) -> None:
        """`format.`path``: refused unless the format is delta (jobs/views.py then checks the path is
        one of the lake's tables)."""
        if len(parts) != 2 or "/" not in parts[1]:
            return
        if parts[0].lower() != "delta":
            raise QueryError(f"{self._what}: files are not read by path here ({parts[0]}.`{parts[1]}`); only "
                             "delta.`<lake>/<table>` is, on the delta-spark engine")
        start, stop = _span(relation)
        if start not in self._travelling:
            self._found.append(TableReference(("delta", parts[1]), start, stop))

    def _note_time_travel(self, plan: JavaObject) -> None:
        """A lake table (or delta.`path`) read at a version or timestamp; a table of a catalog
        (`db.clips VERSION AS OF 3`) is left to Spark, which time-travels Delta tables itself."""
        relation = plan.relation()
        if relation.getClass().getSimpleName() != "UnresolvedRelation":
            return  # IDENTIFIER(...) and the like: refused by the walk
        parts = tuple(_scala_items(relation.multipartIdentifier().iterator()))
        is_path = len(parts) == 2 and parts[0].lower() == "delta" and "/" in parts[1]
        if not (is_path or (len(parts) == 1 and parts[0].lower() in TABLES)):
            return
        start = _span(relation)[0]
        self._travelling.add(start)
        version = plan.version().get() if plan.version().isDefined() else None
        timestamp = None
        if plan.timestamp().isDefined():
            expression = plan.timestamp().get()
            first, last = _span(expression)
            timestamp = _parsed_text(expression, "")[first:last + 1]
        name = ("delta", parts[1]) if is_path else (parts[0].lower(),)
        self._found.append(TableReference(name, start, _span(plan)[1], version, timestamp))

    def _check_expression(self, expression: JavaObject, name: str) -> None:
        simple = name.rsplit(".", 1)[-1]
        if simple == "UnresolvedFunction":
            self._check_function(_last(expression.nameParts()))
        elif simple == "UnresolvedGenerator":
            self._check_function(expression.name().funcName().lower())
        elif simple == "ExpressionWithUnresolvedIdentifier":
            raise QueryError(f"{self._what}: IDENTIFIER(...) naming a function is not accepted here")

    def _check_function(self, function: str) -> None:
        if function in REFUSED_FUNCTIONS:
            raise QueryError(f"{self._what}: the function {function} reaches Java or files outside the lake "
                             "and is not accepted here")


def _span(node: JavaObject) -> tuple[int, int]:
    """Where a parsed node starts and stops (inclusive) in the parsed text."""
    origin = node.origin()
    if not (origin.startIndex().isDefined() and origin.stopIndex().isDefined()):
        raise QueryError(f"the parse of this statement does not say where {node.nodeName()} is in its text")
    return origin.startIndex().get(), origin.stopIndex().get()


def _scala_items(iterator: JavaObject) -> Iterator[Any]:
    while iterator.hasNext():
        yield iterator.next()


def _last(name_parts: JavaObject) -> str:
    """The unqualified name of a multi-part function name (`system.builtin.reflect` -> reflect)."""
    return name_parts.last().lower()
