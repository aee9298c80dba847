"""Tidy outputs (CSV/JSON a user loads with pandas), written atomically."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from .atomic import atomic_write_text


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path, rows: Iterable[Mapping]) -> Path:
    rows = list(rows)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def _jsonable(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
