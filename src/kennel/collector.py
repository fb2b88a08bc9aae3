"""Python's cyclic garbage collector in kennel's own processes: paused while they import.

Importing MLflow, scikit-learn, pandas and SQLAlchemy builds ~370,000 objects, and the
collector scans every one of them each time their number grows by a quarter: six full
collections, ~0.55 s of a 5 s tiny ``kennel train``, all holding the GIL that the data thread
needs at the same time. :func:`paused` turns the collector off while a process imports its
libraries (never while it works through data of unknown size), then freezes what exists
(:func:`gc.freeze`: modules, classes, a model, all alive until the process ends) and turns
it back on; later collections skip the frozen objects, and a forked trial inherits them
without scanning them (nor copying their memory pages by touching them).

Only a process kennel owns does this: the command line's (:func:`kennel.cli.start`, which
exits when the command is done), the search's trial server and its trials, the plot
process, a ``kennel serve`` worker. They call :func:`own_process` first. A notebook or a
test that calls kennel's functions keeps its collector as it is: a frozen object is never
collected, so freezing the heap of a process that goes on to other work could keep what it
later drops.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_owned = False


def own_process() -> None:
    """This process is one of kennel's own, which exits when its work is done."""
    global _owned
    _owned = True


@contextlib.contextmanager
def paused(*, collect: bool = False) -> Iterator[None]:
    """No cyclic collection inside; on the way out, freeze what exists and turn the
    collector back on.

    What became cyclic garbage inside is frozen with the rest and never freed: a bounded,
    one-off amount (~1,700 objects for MLflow's scoring app). ``collect``: one full
    collection before freezing (~0.1-0.2 s), for a process that then serves for days.
    Does nothing outside kennel's own processes, or when the collector is already off (an
    enclosing :func:`paused`, or the user's choice): only the outermost one resumes."""
    if not _owned or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if collect:
            gc.collect()
        gc.freeze()
        gc.enable()
