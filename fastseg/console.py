"""The rich console all fastseg output goes through."""

from rich.console import Console

console = Console(highlight=False)


def log(message: str) -> None:
    """Print a plain line (only in the main process under DDP)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    console.print(message, markup=False, soft_wrap=True)
