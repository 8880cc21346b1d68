"""The rich console all fastseg output goes through."""

from rich.console import Console

console = Console(highlight=False)


def log(message: str) -> None:
    """Print a plain line (only in the main process under DDP)."""
    from fastseg.distributed import is_main
    if not is_main():
        return
    console.print(message, markup=False, soft_wrap=True)
