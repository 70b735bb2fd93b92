"""A curation filter (`curate.where`) taken apart into its conditions.

The report draws each condition's thresholds on its score's distribution and counts how many
clips each condition removes; the demo leaves out the conditions on scores whose models are not
on the machine. Both need the top-level AND terms of the filter, with `x BETWEEN a AND b` kept
whole and nothing inside parentheses or quotes split.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|[A-Za-z_][A-Za-z0-9_.]*|\s+|.""", re.S)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARISON = re.compile(rf"^`?([A-Za-z_][A-Za-z0-9_]*)`?\s*(>=|<=|<>|!=|=|<|>)\s*({_NUMBER})$")
_BETWEEN = re.compile(rf"^`?([A-Za-z_][A-Za-z0-9_]*)`?\s+BETWEEN\s+({_NUMBER})\s+AND\s+({_NUMBER})$", re.I)


@dataclass(frozen=True)
class Condition:
    """One top-level term of a filter; `column` and `thresholds` when it is a simple numeric test."""

    sql: str
    column: str | None = None
    thresholds: tuple[float, ...] = ()


def split_conditions(where: str) -> list[str]:
    """The top-level AND terms of a SQL boolean expression, as text."""
    terms, current, depth, pending_between = [], [], 0, 0
    for token in _TOKEN.findall(where):
        word = token.upper()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0 and word == "BETWEEN":
            pending_between += 1
        elif depth == 0 and word == "AND":
            if pending_between:
                pending_between -= 1
            else:
                terms.append("".join(current).strip())
                current = []
                continue
        current.append(token)
    terms.append("".join(current).strip())
    return [t for t in terms if t]


def parse_condition(sql: str) -> Condition:
    """A term with its column and thresholds when it is `col OP number` or `col BETWEEN a AND b`."""
    text = " ".join(sql.split())
    comparison = _COMPARISON.match(text)
    if comparison:
        return Condition(sql, comparison.group(1), (float(comparison.group(3)),))
    between = _BETWEEN.match(text)
    if between:
        return Condition(sql, between.group(1), (float(between.group(2)), float(between.group(3))))
    return Condition(sql)


def conditions(where: str) -> list[Condition]:
    return [parse_condition(term) for term in split_conditions(where)]


def referenced_columns(sql: str, columns: list[str]) -> list[str]:
    """The given column names that appear as identifiers in `sql` (outside string literals)."""
    identifiers = {t.strip("`").lower() for t in _TOKEN.findall(sql) if t[:1].isalpha() or t[:1] in "_`"}
    return [c for c in columns if c.lower() in identifiers]
