"""The rich console all fastseg output goes through."""

from rich.console import Console

console = Console(highlight=False)


def log(message: str) -> None:
    console.print(message, markup=False, soft_wrap=True)
