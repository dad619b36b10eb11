"""The progress bar of the long-running commands (``acceltcp demo``, ``acceltcp bench``).

Here, not in ``cli.py``, so that ``eval`` (layer 5) and ``cli`` (layer 6) both import it
downward (issue 13: ``cli`` and ``eval.bench`` imported each other)."""


def progress_bar():
    """A transient ``rich`` progress bar: description, bar, done/total, time elapsed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=True)
