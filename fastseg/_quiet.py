"""Imported first by the CLI: silences warnings a user can do nothing about.

fastai's `layers.py` calls `torch.jit.script` at import time, and recent torch answers each of those
ten calls with a FutureWarning that `torch.jit` is deprecated. Only that message is filtered, and
only for the command line; library users keep every warning.
"""

import warnings

warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
