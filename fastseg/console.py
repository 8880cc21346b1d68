"""The rich console all fastseg output goes through."""

from contextlib import contextmanager

from rich.console import Console

console = Console(highlight=False)


def log(message: str) -> None:
    """Print a plain line (only in the main process under DDP)."""
    from fastseg.devices.distributed import is_main
    if not is_main():
        return
    console.print(message, markup=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str, total: int | None = None, completed: int = 0, columns: tuple = ()):
    """The one progress bar of fastseg: rich, transient, shown only on a terminal (logs and pipes get
    none). Yields `advance(steps=1)`; `columns` replace rich's default columns."""
    from rich.progress import Progress
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total, completed=completed)
        yield lambda steps=1: bar.advance(task, steps)


def tracked(items, description: str):
    """Yield the items of a sized iterable under rich's `track` bar, shown as `progress_bar` is:
    transient, and only on a terminal."""
    from rich.progress import track
    return track(items, description, console=console, transient=True, disable=not console.is_terminal)
