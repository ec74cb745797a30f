"""Label selectors (controlplane/domain/selectors.py) as SQL conditions on a JSON column,
the same on PostgreSQL (JSONB `->>`) and SQLite (`json_extract`); on PostgreSQL `=` and `in`
are also containment (`labels @> '{"key": "value"}'`), which a GIN index serves
(ix_agents_labels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, or_, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from controlplane.domain.selectors import Operator, Requirement


def label_condition(
    column: Any, requirements: Sequence[Requirement], *, postgres: bool = False
) -> ColumnElement[bool]:
    """A WHERE condition: the labels in `column` satisfy every requirement; `postgres`
    (the dialect of the connection) says whether containment may be used."""
    conditions: list[ColumnElement[bool]] = []
    for r in requirements:
        value = column[r.key].as_string()
        match r.operator:
            case Operator.EQUALS | Operator.IN if postgres:
                contains = [
                    column.op("@>")(bindparam(None, {r.key: v}, type_=JSONB)) for v in r.values
                ]
                conditions.append(or_(*contains))
            case Operator.EQUALS | Operator.IN:
                conditions.append(value.in_(r.values))
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                conditions.append(or_(value.is_(None), value.not_in(r.values)))
            case Operator.EXISTS:
                conditions.append(value.is_not(None))
            case Operator.DOES_NOT_EXIST:
                conditions.append(value.is_(None))
    return and_(true(), *conditions)
