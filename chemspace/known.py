"""Known compositions from a local file (CSV / Parquet), as a set of canonical keys.

A known-formulas file has one formula per row in a column named ``formula`` (or
``reduced_formula``, ``pretty_formula``, ``formula_pretty``, ``composition``); a CSV may also
be a bare single column.  Formulas in any element order and any multiple are accepted
("SLi2", "Li4S2" and "Li2S" are one composition): rows are joined on the canonical composition
key (:mod:`chemspace.composition`), never on formula strings.
"""
from __future__ import annotations

import csv
from pathlib import Path

from common.errors import InputError
from chemspace.composition import formula_key
from chemspace.species import SpeciesTable, species_table

FORMULA_COLUMNS = ("formula", "reduced_formula", "pretty_formula", "formula_pretty", "composition")


def read_formulas(path: str | Path) -> list[str]:
    """Formula strings of a CSV or Parquet file; InputError when malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"known-formulas file {path} not found; give a CSV or Parquet file with a 'formula' column")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            tab = pq.read_table(path)
        except Exception:  # noqa: BLE001 - pyarrow raises several types
            raise InputError(f"{path} is not a readable Parquet file; give a CSV or Parquet file of formulas") from None
        col = next((c for c in FORMULA_COLUMNS if c in tab.column_names), None)
        if col is None:
            raise InputError(f"{path} has no formula column (one of {', '.join(FORMULA_COLUMNS)}); rename the column")
        formulas = [str(f) for f in tab.column(col).to_pylist() if f is not None]
    else:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (UnicodeDecodeError, csv.Error):
            raise InputError(f"{path} is not a readable CSV text file; give a CSV with a 'formula' column") from None
        if not rows:
            raise InputError(f"{path} is empty; give a CSV with a 'formula' column and one formula per row")
        header = [h.strip().lower() for h in rows[0]]
        col = next((header.index(c) for c in FORMULA_COLUMNS if c in header), None)
        if col is None:
            if len(header) != 1:
                raise InputError(f"{path} has no formula column (one of {', '.join(FORMULA_COLUMNS)}); add a header")
            col, rows = 0, rows  # headerless single column: every row is a formula
        else:
            rows = rows[1:]
        formulas = []
        for lineno, row in enumerate(rows, 2):
            if not row or not "".join(row).strip():
                continue
            if col >= len(row):
                raise InputError(f"{path}:{lineno}: missing formula field; fix the row")
            formulas.append(row[col])
    if not formulas:
        raise InputError(f"{path} holds no formulas; give one formula per row")
    return formulas


def known_keys(path: str | Path, table: SpeciesTable | None = None) -> set[str]:
    """Canonical keys of every formula in a known-formulas file (InputError names a bad row)."""
    table = table or species_table()
    keys = set()
    for i, f in enumerate(read_formulas(path)):
        try:
            keys.add(formula_key(f, table))
        except InputError as exc:
            raise InputError(f"{path}: formula #{i + 1} {f!r}: {exc}") from None
    return keys


def bundled_known() -> Path:
    """The small offline known-formulas file shipped with chemspace (see chemspace/data/README.md)."""
    return Path(__file__).parent / "data" / "known_li_thiophosphates.csv"
