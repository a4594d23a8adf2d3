"""A rich progress bar over a run's batches, fed by polling the ledger (works for any runner)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows import db


def _counts(conn: psycopg.Connection, run_id: str) -> tuple[int, int, int]:
    row = conn.execute(
        "select count(*), count(*) filter (where status = 'succeeded'),"
        " count(*) filter (where status = 'failed') from migration.batches where run_id = %s",
        [run_id],
    ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


@contextmanager
def progress_over_batches(
    target_url: str, run_id: str, console: Console, interval: float = 0.5
) -> Iterator[None]:
    """Show batches done out of planned while the body runs; silent when not a terminal."""
    if not console.is_terminal:
        yield
        return
    stop = threading.Event()
    columns = (
        TextColumn("[bold]batches"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("batches", total=None, failed=0)

        def poll() -> None:
            try:
                with db.connect(target_url, autocommit=True) as conn:
                    while not stop.wait(interval):
                        total, done, failed = _counts(conn, run_id)
                        if total:
                            bar.update(task, total=total, completed=done + failed, failed=failed)
            except Exception:  # the bar is a courtesy: never let it break a run
                return

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join(timeout=5)
