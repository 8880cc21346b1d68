"""The `fastseg` command line: each command parses its options, builds a config, makes one library
call and prints a summary. One module per command group (data, train, evaluate, tools, runs); what
they share is in `common`.

Only typer, rich and fastseg's torch-free modules (config, console, constants, errors, the model
registry) are imported at the top, so that `fastseg --help` starts without torch; each command
imports what it runs.
"""

import typer

from fastseg import _quiet  # noqa: F401 - first: silences fastai's torch.jit FutureWarnings at import

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train and evaluate SegNet and VGG16-BN skip models on PASCAL VOC and SBD.")

# the command groups register their commands on `app`, in this order (the order --help lists them)
from fastseg.cli import data, train, evaluate, tools, runs  # noqa: E402, F401, I001
