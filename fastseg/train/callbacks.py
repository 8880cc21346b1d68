"""fastai callbacks that make a run reproducible, resumable and safe to interrupt."""

import math
import random
import signal
import threading

import torch
from fastai.callback.core import Callback, CancelEpochException, CancelFitException
from fastai.torch_core import set_seed, to_device

from fastseg.devices.collectives import all_gather_object, any_process, world_size
from fastseg.devices.distributed import bare_model, rewrap
from fastseg.errors import FastsegError

HOST_CHECK_EVERY = 16  # batches between host reads of device-side flags (NaN, stop under DDP)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**32


class SeedEpochs(Callback):
    """Reseeds every RNG from (seed + rank, epoch) and the training loader's shuffle from (seed,
    epoch) at each epoch start, so an epoch's batches and augmentations do not depend on what ran
    before it (a resumed run sees exactly the data an uninterrupted one would), and under DDP each
    process draws its own augmentations (rank 0 draws those of a single process) from one shared
    sample order."""

    order = -30

    def __init__(self, seed: int, rank: int = 0):
        self.seed, self.rank = seed, rank

    def before_epoch(self):
        set_seed(epoch_seed(self.seed + self.rank, self.epoch))  # python, numpy, torch (and CUDA)
        shuffling = self.dls.train
        shuffling = getattr(shuffling, "dl", shuffling)  # DDP's DistributedDL shuffles with its inner loader
        shuffling.rng = random.Random(epoch_seed(self.seed, self.epoch))


def run_state(learn, epoch: int, batch: int, tracker: dict) -> dict:
    """Everything a resume needs: model, optimizer, position (epoch, batch within it), tracker,
    smoothed loss and grad scaler. No RNG state: SeedEpochs reseeds every generator from (seed,
    epoch) at each epoch start, and Resume replays the skipped batches' draws."""
    smooth = learn.recorder.smooth_loss
    scaler = getattr(learn, "scaler", None)
    return {"epoch": epoch, "batch": batch, "model": bare_model(learn.model).state_dict(),
            "opt": learn.opt.state_dict(), "tracker": tracker,
            "smooth_loss": {"val": smooth.val, "count": smooth.count},
            "scaler": scaler.state_dict() if scaler is not None else None}


class SkipBatches:
    """A loader view that draws (and discards) the first `skip` batches, keeping the RNG stream of
    an uninterrupted epoch, then yields the rest. `len` is the full epoch's."""

    def __init__(self, dl, skip: int):
        self.dl, self.skip = dl, skip

    def __len__(self):
        return len(self.dl)

    def __iter__(self):
        for i, batch in enumerate(self.dl):
            if i >= self.skip:
                yield batch

    def __getattr__(self, name):
        return getattr(self.dl, name)


class Resume(Callback):
    """Restores a checkpoint at the start of fit and skips the epochs (and batches) it covers.

    Order 70, like fastai's SkipToEpoch: after the Recorder has opened the epoch's log, and after
    TrainEvalCallback has set `pct_train` (the LR schedule position), which it then moves on.
    """

    order = 70

    def __init__(self, state: dict):
        self.state = state

    def before_fit(self):
        device = next(self.learn.model.parameters()).device
        bare_model(self.learn.model).load_state_dict(self.state["model"])
        self.learn.opt.load_state_dict(to_device(self.state["opt"], device))
        if self.state["scaler"] is not None and getattr(self.learn, "scaler", None) is not None:
            self.learn.scaler.load_state_dict(self.state["scaler"])

    def before_epoch(self):
        if self.epoch < self.state["epoch"]:
            raise CancelEpochException

    def before_train(self):
        if self.epoch != self.state["epoch"]:
            return
        # fastai's smoothed training loss runs on across epochs: continue it where it was
        smooth = self.learn.recorder.smooth_loss
        smooth.val = torch.as_tensor(self.state["smooth_loss"]["val"]).to(next(self.learn.model.parameters()).device)
        smooth.count = self.state["smooth_loss"]["count"]
        skip = self.state["batch"]
        if skip:
            self.learn.dl = SkipBatches(self.dl, skip)
            self.learn.pct_train += skip / (len(self.dl) * self.n_epoch)
            self.learn.train_iter += skip


def host_check_due(cb: Callback) -> bool:
    """Whether the batch just run is one after which a device-side flag is read on the host: every
    HOST_CHECK_EVERY batches and the loader's last (the same batches in every DDP process)."""
    return (cb.iter + 1) % HOST_CHECK_EVERY == 0 or cb.iter + 1 == len(cb.dl)


class Interrupt(Callback):
    """On Ctrl-C or SIGTERM, finishes the current batch, asks `save(batch_done)` for a checkpoint
    and stops the fit cleanly."""

    order = 90

    def __init__(self, save):
        self.save, self.requested, self.previous = save, None, {}

    def before_fit(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._request)

    def _request(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def after_batch(self):
        """In training, all processes stop after the same batch; in validation (where processes may
        hold different numbers of batches) a single process stops at once, several after it."""
        if self.training and self._agreed():
            self._stop(self.iter + 1)
        if not self.training and world_size() == 1 and self.requested is not None:
            self._stop(len(self.dls.train))

    def after_validate(self):
        if world_size() > 1 and any_process(self.requested is not None):
            self._stop(len(self.dls.train))

    def _stop(self, batches_done: int):
        self.save(batches_done)
        raise CancelFitException

    def _agreed(self) -> bool:
        """Whether any process was asked to stop: under DDP all processes must stop after the same
        training batch, so the flag is all-reduced every HOST_CHECK_EVERY batches (and at the loader's
        end), batches that every process reaches."""
        if world_size() == 1:
            return self.requested is not None
        return host_check_due(self) and any_process(self.requested is not None)

    def after_fit(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


EXPLODE_FACTOR = 100
"""A training loss above EXPLODE_FACTOR × ln(classes), the cross-entropy of an untrained model that
spreads its probability evenly, means the run diverged: no run that learns gets there."""


def divergence_advice(lr) -> str:
    """What to try after a run diverged at peak learning rate `lr`."""
    shown = f"{lr:g}" if isinstance(lr, int | float) else str(lr)
    return f"lower --lr ({shown} now) or set --clip, and start a new run."


class NaNGuard(Callback):
    """Stops the run when the training loss is not finite or explodes (above EXPLODE_FACTOR × ln
    `classes`), naming the epoch, batch and loss. The check keeps flags on the device and reads them
    every HOST_CHECK_EVERY batches, so it adds no host sync per step."""

    order = 6

    def __init__(self, classes: int = 21, lr=None):
        self.limit, self.lr = EXPLODE_FACTOR * math.log(max(classes, 2)), lr

    def before_epoch(self):
        self.first_bad = None

    def after_loss(self):
        if not self.training:
            return
        loss = self.learn.loss.detach().float()
        bad = ~torch.isfinite(loss) | (loss > self.limit)
        if self.first_bad is None:
            self.first_bad = torch.full((2,), -1.0, device=loss.device)  # (batch, its loss)
        here = torch.stack([torch.full_like(loss, float(self.iter)), loss])
        self.first_bad = torch.where(bad & (self.first_bad[0] < 0), here, self.first_bad)
        if host_check_due(self):
            self._check()

    def _check(self):
        """Every process reads every process's first bad (batch, loss) at the same batch, so under DDP
        all stop together at the earliest one (a process stopping alone would leave the others
        waiting in their next collective)."""
        seen = [tuple(bad) for bad in all_gather_object(self.first_bad.tolist()) if bad[0] >= 0]
        if not seen:
            return
        batch, loss = min(seen, key=lambda bad: bad[0])
        where = f"at epoch {self.epoch + 1}, batch {int(batch) + 1}"
        what = (f"became {'NaN' if math.isnan(loss) else 'infinite'} {where}" if not math.isfinite(loss) else
                f"exploded to {loss:.3g} {where} (over {EXPLODE_FACTOR} times an untrained model's "
                f"{self.limit / EXPLODE_FACTOR:.2f})")
        raise FastsegError(f"The training loss {what}; {divergence_advice(self.lr)}", exit_code=1)


class FreezeEncoder(Callback):
    """Trains the decoder alone for the first `epochs` epochs, then everything. A fit resumed at
    `start_epoch` begins in that epoch's state.

    Order 10: the state is set before DDP is built (order 11), and DDP is rebuilt when it changes,
    since DDP reduces the gradients of the parameters that required them when it was built."""

    order = 10

    def __init__(self, epochs: int, start_epoch: int = 0):
        self.epochs, self.start_epoch = epochs, start_epoch

    def before_fit(self):
        self.frozen = self.start_epoch < self.epochs
        self.learn.opt.freeze_to(-1 if self.frozen else 0)

    def before_epoch(self):
        frozen = self.epoch < self.epochs
        if frozen != self.frozen:
            self.frozen = frozen
            self.learn.opt.freeze_to(-1 if frozen else 0)
            rewrap(self.learn)


class L1Penalty(Callback):
    """Adds coef × Σ|w| over all trainable weights to the loss that is back-propagated (the
    logged loss stays the data loss)."""

    order = 5

    def __init__(self, coef: float):
        self.coef = coef

    def after_loss(self):
        if not self.training or self.coef == 0:
            return
        params = [p for p in self.learn.model.parameters() if p.requires_grad]
        self.learn.loss_grad = self.learn.loss_grad + self.coef * sum(p.abs().sum() for p in params)
