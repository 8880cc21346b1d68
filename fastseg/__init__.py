"""fastseg: SegNet and VGG16-BN skip models on PASCAL VOC and SBD with fastai.

The package is grouped by concern. The base modules at the top are imported by every wing and
import no torch and no wing: config (every command's configuration, the split names and dataset
roots), constants, classes (a dataset's class names and colours, and the classes-file format),
errors (the exit codes), console (its `log` asks devices.distributed, lazily,
whether this process is rank 0). The wings, each with a docstring saying what it may import:

    io/        atomic writes, checkpoint serialisation, run folders
    devices/   device selection, DDP, precision
    data/      VOC / SBD / folder-dataset readers, splits, checks, statistics, transforms, DataBlock,
               synthetic data
    models/    the registry (ARCHS, create_model), SegNet, the VGG16-BN skip model, the colour-only
               control, weights files
    train/     fit, find-lr, Learner, losses, schedules, callbacks, recorder, TensorBoard
    evaluate/  metrics, scoring, TTA, predict, export, report, figures
    tools/     demo, bench, doctor

cli/ (one module per command group) turns each command into a config and one library call.
"""

__version__ = "0.1.0"

import os as _os

# albumentations asks PyPI for a newer version of itself on every import (a request of up to 2 s, and a
# warning on stderr when one exists); a segmentation command should not, unless the user says otherwise.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
