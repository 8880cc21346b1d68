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
def progress_bar(description: str, total: int | None = None):
    """A transient rich progress bar, shown only on a terminal; yields `advance()` (one step)."""
    from rich.progress import Progress
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
