"""The paper's published numbers (MSF Tables 1-5), transcribed verbatim into ``paper_values.csv``.

Each CSV line is one printed cell: ``table,row,column,value,printed``. ``printed`` is the text as it appears in the
paper ("767M", "~45", "—"); ``value`` is its number in the column's unit (parameters in millions; empty when the paper
prints no number). Tables 2-5 are one row ("FID-5K") whose columns are the CFG scale or the number of steps.
Table 1 also carries one peer row that MSF's table lacks, named with its source: DiMR-XL/2R (505M parameters,
qihao067/DiMR README; FID 1.70 on ImageNet 256, the DiMR abstract); its other cells are not transcribed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PAPER_CSV = Path(__file__).with_name("paper_values.csv")
TABLE1_COLUMNS = ("Para", "FID", "IS", "Pre", "Rec", "Time")


@dataclass(frozen=True)
class Cell:
    """One printed cell of the paper (Tables 1-5)."""

    table: int
    row: str
    column: str
    value: float | None
    printed: str


@cache
def cells() -> tuple[Cell, ...]:
    """All transcribed cells of Tables 1-5, in the paper's order (Tables 1-5)."""
    with PAPER_CSV.open(newline="", encoding="utf-8") as f:
        return tuple(
            Cell(int(r["table"]), r["row"], r["column"], float(r["value"]) if r["value"] else None, r["printed"])
            for r in csv.DictReader(f)
        )


def table1_rows() -> list[str]:
    """The model rows of Table 1, in the paper's order (Table 1)."""
    return list(dict.fromkeys(c.row for c in cells() if c.table == 1))


def table1_cell(row: str, column: str) -> Cell:
    """One cell of Table 1 by model row and column (Para, FID, IS, Pre, Rec, Time) (Table 1)."""
    for c in cells():
        if c.table == 1 and c.row == row and c.column == column:
            return c
    raise KeyError(f"Table 1 has no cell ({row!r}, {column!r})")


def curve(table: int) -> dict[float, float]:
    """FID-5K by CFG scale (Tables 2, 3) or by sampling steps (Tables 4, 5), as printed (Tables 2-5)."""
    if table not in (2, 3, 4, 5):
        raise ValueError(f"the paper's FID-5K curves are Tables 2-5, not Table {table}")
    return {float(c.column): c.value for c in cells() if c.table == table and c.value is not None}


def curve_range(table: int) -> float:
    """Max minus min of a printed FID-5K curve, rounded to the paper's 2 decimals (Tables 3, 5: '0.03', '0.05')."""
    values = curve(table).values()
    return round(max(values) - min(values), 2)
