"""Where the model is unsure: Monte Carlo dropout sampling (Bayesian SegNet), calibration and the
uncertainty maps.

- `MonteCarlo` wraps a model with dropout (`models.dropout`): N stochastic passes, batched, seeded,
  averaged in softmax space. Its output is log(mean probabilities), so everything that takes logits
  (argmax, softmax, TTA, temperature) takes it unchanged.
- `CalibrationStats` accumulates, over an evaluation, pixel-level expected calibration error (15
  equal-width confidence bins, void excluded), negative log-likelihood, and histograms of per-pixel
  entropy for right and wrong pixels, from which the AUROC of "entropy flags a wrong pixel" follows.
- `fit_temperature` fits one temperature T (logits / T) minimising NLL on a sample of validation
  pixels (Guo et al. 2017, "On Calibration of Modern Neural Networks").
"""

import math

import torch
from torch import nn

from fastseg.constants import IGNORE_INDEX
from fastseg.models.dropout import has_dropout, mc_sampling

ECE_BINS = 15             # equal-width confidence bins, as Guo et al.
ENTROPY_BINS = 1000       # histogram resolution of per-pixel entropy for the AUROC
MC_IMAGES_PER_PASS = 16   # images (passes × batch) per batched forward of MonteCarlo
TEMPERATURE_PIXELS = 200_000  # validation pixels `--calibrate` fits the temperature on


class MonteCarlo(nn.Module):
    """`model` (in eval mode, BatchNorm on its running statistics) sampled `samples` times with its
    dropout on. forward: N×3×H×W → N×C×H×W log of the mean softmax over the samples.

    The passes are stacked along the batch (MC_IMAGES_PER_PASS images per forward), so on a GPU N
    passes cost about one batched forward. The dropout masks come from a generator seeded with
    `seed` at every call, so the same images give the same prediction; the global RNG is untouched.
    A model without dropout has nothing to sample: its one deterministic pass is returned as is.
    """

    def __init__(self, model: nn.Module, samples: int, seed: int = 0, keep_variance: bool = False):
        super().__init__()
        self.model, self.samples, self.seed = model, samples, seed
        self.sampling, self.keep_variance = has_dropout(model), keep_variance
        self.variance = None  # with keep_variance: the last call's N×H×W variance of the winning class

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sampling:
            if self.keep_variance:
                self.variance = x.new_zeros(len(x), *x.shape[-2:])
            return self.model(x)
        mean, variance = self.mean_probabilities(x)
        if self.keep_variance:
            self.variance = variance
        return mean.clamp_min(1e-30).log()

    def mean_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean probabilities N×C×H×W, variance over the samples of the winning class's probability N×H×W)."""
        devices = [x.device] if x.device.type == "cuda" else []
        total = total_sq = None
        with torch.random.fork_rng(devices=devices), mc_sampling(self.model):
            torch.manual_seed(self.seed)
            for chunk in pass_chunks(self.samples, len(x)):
                probs = self.model(x.repeat(chunk, 1, 1, 1)).float().softmax(1).unflatten(0, (chunk, len(x)))
                total = probs.sum(0) if total is None else total + probs.sum(0)
                total_sq = (probs ** 2).sum(0) if total_sq is None else total_sq + (probs ** 2).sum(0)
        mean = total / self.samples
        win = mean.argmax(1, keepdim=True)
        second = total_sq.gather(1, win)[:, 0] / self.samples
        return mean, (second - mean.gather(1, win)[:, 0] ** 2).clamp_min(0)


def pass_chunks(samples: int, batch: int) -> list[int]:
    """How many passes each batched forward stacks: MC_IMAGES_PER_PASS images at most (at least one pass)."""
    per = max(1, MC_IMAGES_PER_PASS // max(batch, 1))
    return [min(per, samples - start) for start in range(0, samples, per)]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy in nats of N×C×H×W probabilities: N×H×W, in [0, log C]."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(1)


class CalibrationStats:
    """Streaming calibration and uncertainty statistics over non-void pixels (all float64 / int64 on
    the device of the first batch): ECE bins, NLL, and entropy histograms of right and wrong pixels."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = self.conf_sums = self.correct = self.entropy_right = self.entropy_wrong = None
        self.nll_sum = 0.0

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """probs: N×C×H×W; target: N×H×W with IGNORE_INDEX for void."""
        if self.counts is None:
            self._start(probs.device)
        valid = target != IGNORE_INDEX
        p = probs.permute(0, 2, 3, 1)[valid].float()   # P×C; sums below are accumulated in float64
        t = target[valid]
        conf, pred = p.max(1)
        right = pred == t
        bins = (conf * ECE_BINS).long().clamp(0, ECE_BINS - 1)
        self.counts += torch.bincount(bins, minlength=ECE_BINS)
        self.conf_sums += torch.zeros(ECE_BINS, dtype=torch.float64, device=p.device).index_add_(0, bins, conf.double())
        self.correct += torch.bincount(bins, weights=right.double(), minlength=ECE_BINS).long()
        self.nll_sum += float(-p.gather(1, t[:, None]).clamp_min(1e-30).log().double().sum())
        ent = -(p * p.clamp_min(1e-30).log()).sum(1)
        ebins = (ent / math.log(self.num_classes) * ENTROPY_BINS).long().clamp(0, ENTROPY_BINS - 1)
        self.entropy_right += torch.bincount(ebins[right], minlength=ENTROPY_BINS)
        self.entropy_wrong += torch.bincount(ebins[~right], minlength=ENTROPY_BINS)

    def _start(self, device) -> None:
        def zeros(n, dtype=torch.long):
            return torch.zeros(n, dtype=dtype, device=device)
        self.counts, self.correct = zeros(ECE_BINS), zeros(ECE_BINS)
        self.conf_sums = zeros(ECE_BINS, torch.float64)
        self.entropy_right, self.entropy_wrong = zeros(ENTROPY_BINS), zeros(ENTROPY_BINS)

    def reduce(self, total) -> None:
        """Replace every accumulator by `total(tensor)`: the sum over processes under DDP."""
        if self.counts is None:
            self._start("cpu")
        nll = torch.tensor([self.nll_sum], dtype=torch.float64, device=self.counts.device)
        self.counts, self.conf_sums, self.correct, self.entropy_right, self.entropy_wrong, nll = (
            total(t) for t in (self.counts, self.conf_sums, self.correct, self.entropy_right, self.entropy_wrong, nll))
        self.nll_sum = float(nll[0])

    def summary(self) -> dict:
        """{"ece", "nll", "pixels", "bins": [{"lo", "hi", "pixels", "confidence", "accuracy"}], "entropy_auroc"}."""
        counts, conf, correct = (t.double().cpu() for t in (self.counts, self.conf_sums, self.correct))
        total = float(counts.sum())
        used = counts > 0
        gaps = (correct[used] / counts[used] - conf[used] / counts[used]).abs()
        bins = [{"lo": b / ECE_BINS, "hi": (b + 1) / ECE_BINS, "pixels": int(counts[b]),
                 "confidence": float(conf[b] / counts[b]) if counts[b] else None,
                 "accuracy": float(correct[b] / counts[b]) if counts[b] else None} for b in range(ECE_BINS)]
        return {"ece": float((counts[used] / total * gaps).sum()) if total else math.nan,
                "nll": self.nll_sum / total if total else math.nan, "pixels": int(total), "bins": bins,
                "entropy_auroc": histogram_auroc(self.entropy_wrong.cpu(), self.entropy_right.cpu())}


def histogram_auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """AUROC of a score from its histograms over the same ascending bins: the probability that a
    positive scores above a negative, ties (same bin) counted half. NaN without both kinds."""
    pos, neg = positive.double(), negative.double()
    if pos.sum() == 0 or neg.sum() == 0:
        return math.nan
    below = torch.cumsum(neg, 0) - neg   # negatives in lower bins
    return float(((pos * (below + 0.5 * neg)).sum()) / (pos.sum() * neg.sum()))


def sample_pixels(logits: torch.Tensor, target: torch.Tensor, k: int, gen: torch.Generator) -> tuple:
    """Up to `k` random non-void pixels of one batch: (logits P×C float32 on the CPU, targets P)."""
    valid = target != IGNORE_INDEX
    flat, t = logits.permute(0, 2, 3, 1)[valid].float().cpu(), target[valid].cpu()
    if len(t) > k:
        keep = torch.randperm(len(t), generator=gen)[:k]
        flat, t = flat[keep], t[keep]
    return flat, t


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) on P×C `logits` and P `target`
    (LBFGS on log T, from T = 1)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss
    opt.step(closure)
    return float(log_t.exp())
