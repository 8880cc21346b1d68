"""SegNet's unpool on CUDA: the Learner's bf16 + channels_last training step with `nn.MaxUnpool2d`
(which wants NCHW-contiguous input) and the scatter form (`--deterministic`'s), with and without
cuDNN autotuning. Prints one line per variant (img/s). Usage: python tools/unpool_bench.py [BATCH SIZE STEPS]."""

import sys

import torch

from fastseg.config import BenchConfig
from fastseg.models import blocks, create_model
from fastseg.tools.bench import learner_epoch_seconds, random_batches


def main(batch: int = 32, size: int = 320, steps: int = 15) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = BenchConfig(arch_size=size, batch=batch, steps=steps, width=1.0 if device.type == "cuda" else 0.0625)
    batches = random_batches(cfg, device)
    original = blocks.Unpool.forward
    variants = {"MaxUnpool2d": original,
                "scatter": lambda self, x, i, s: blocks.scatter_unpool(x, i, s)}
    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        for name, forward in variants.items():
            blocks.Unpool.forward = forward
            seconds = learner_epoch_seconds(create_model("segnet", width=cfg.width), batches, device, "bf16", True)
            print(f"unpool={name:12s} cudnn.benchmark={autotune}: {batch * steps / seconds:7.1f} img/s", flush=True)
    blocks.Unpool.forward = original


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
