"""Label selectors (controlplane/domain/selectors.py) as SQL conditions on a JSON column,
the same on PostgreSQL (JSONB `->>`) and SQLite (`json_extract`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, or_, true
from sqlalchemy.sql.elements import ColumnElement

from controlplane.domain.selectors import Operator, Requirement


def label_condition(column: Any, requirements: Sequence[Requirement]) -> ColumnElement[bool]:
    """A WHERE condition: the labels in `column` satisfy every requirement."""
    conditions: list[ColumnElement[bool]] = []
    for r in requirements:
        value = column[r.key].as_string()
        match r.operator:
            case Operator.EQUALS | Operator.IN:
                conditions.append(value.in_(r.values))
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                conditions.append(or_(value.is_(None), value.not_in(r.values)))
            case Operator.EXISTS:
                conditions.append(value.is_not(None))
            case Operator.DOES_NOT_EXIST:
                conditions.append(value.is_(None))
    return and_(true(), *conditions)
