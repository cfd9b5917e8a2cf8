"""The rating app's database: one SQLite file per round (`ROUND_DIR/ratings.sqlite`, standard library `sqlite3`).

Every click is one committed transaction (WAL journal), so a closed tab, a killed server or a power cut loses at
most the click in flight. A rating is keyed by (file_name, rater): a rater who changes their mind overwrites their
own row, never another person's. A file that is not a sound SQLite database (garbage, cut short, a damaged page) is
`UnreadableRatings`, naming the file and what to do; the store never replaces it, since it may hold the only copy.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    file_name TEXT NOT NULL,
    rater TEXT NOT NULL,
    aligned INTEGER CHECK (aligned IN (0, 1)),
    style INTEGER CHECK (style BETWEEN 1 AND 5),
    updated REAL NOT NULL,
    PRIMARY KEY (file_name, rater)
)
"""


class UnreadableRatings(RuntimeError):
    """The ratings database is damaged; the message names the file and how to recover."""

    def __init__(self, path: Path, why: str):
        super().__init__(
            f"{path} is not a readable ratings database ({why}); it was left as it is. Move it aside (e.g. to "
            f"{path.name}.damaged) and restart: an empty database is made. To get ratings back, try "
            f"`sqlite3 {path.name}.damaged .recover | sqlite3 {path.name}`, or import an export "
            "(ratings_export.csv, Label Studio JSON) with hitl.rater.files")
        self.path = path


class RatingStore:
    def __init__(self, path):
        self.path = Path(path)
        with self._open() as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            # A damaged page would otherwise surface at some later click; find it before anyone rates.
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise UnreadableRatings(self.path, f"quick_check: {problems[0]}")
            db.execute(SCHEMA)

    @contextmanager
    def _open(self):
        """A connection; SQLite's "not a database" and "malformed" errors become UnreadableRatings."""
        try:
            with closing(sqlite3.connect(self.path, timeout=30)) as db:
                db.row_factory = sqlite3.Row
                yield db
        except sqlite3.DatabaseError as err:
            if not getattr(err, "sqlite_errorname", "").startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
                raise  # locked, read-only, full disk: not damage, and said as SQLite says it
            raise UnreadableRatings(self.path, str(err)) from None

    def set(self, file_name: str, rater: str, aligned: Optional[int] = None, style: Optional[int] = None,
            aligned_if_unset: Optional[int] = None) -> dict:
        """Record one answer (either question, or both) in one transaction; the other keeps its earlier value.
        `aligned_if_unset` is the aligned answer to record when neither this call nor an earlier one gave one (the
        grid's rule: a candidate graded without being marked aligned is not aligned)."""
        for key, value in (("aligned", aligned), ("aligned_if_unset", aligned_if_unset)):
            if value is not None and (isinstance(value, bool) or value not in (0, 1)):
                raise ValueError(f"{key} must be 0 or 1, got {value!r}")
        if style is not None and (isinstance(style, bool) or not (isinstance(style, int) and 1 <= style <= 5)):
            raise ValueError(f"style must be an integer 1-5, got {style!r}")
        first = aligned if aligned is not None else aligned_if_unset
        with self._open() as db, db:
            db.execute(
                "INSERT INTO ratings (file_name, rater, aligned, style, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (file_name, rater) DO UPDATE SET aligned = COALESCE(?, aligned, ?), "
                "style = COALESCE(excluded.style, style), updated = excluded.updated",
                (file_name, rater, first, style, time.time(), aligned, aligned_if_unset))
            row = db.execute("SELECT * FROM ratings WHERE file_name = ? AND rater = ?", (file_name, rater)).fetchone()
        return dict(row)

    def rows(self, rater: Optional[str] = None) -> list[dict]:
        query, args = "SELECT file_name, rater, aligned, style FROM ratings", ()
        if rater is not None:
            query, args = query + " WHERE rater = ?", (rater,)
        with self._open() as db:
            return [dict(r) for r in db.execute(query + " ORDER BY rater, file_name", args)]

    def complete_rows(self) -> list[dict]:
        """Rows with both answers given (what export and curation use)."""
        return [r for r in self.rows() if r["aligned"] is not None and r["style"] is not None]
