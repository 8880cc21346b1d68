"""Moving batches onto the device: fastai's loader copies each batch with `non_blocking=False`, so
pinned host memory buys no overlap of the copy with the previous step's kernels.

`NonBlockingLoader` is fastai's `DataLoader.__iter__` with the one copy made asynchronous. It is a
mixin for every loader class fastseg iterates (the size-grouped TfmdDL and the DDP loader), and
must stay identical to fastai's loop otherwise (fastai/data/load.py, `DataLoader.__iter__`).

Why fastai's workers cannot persist across epochs: fastai draws each epoch's sample order in the
main process and starts the worker processes afterwards, so they inherit it (`_FakeLoader` is
iterated by fresh `_MultiProcessingDataLoaderIter`s each epoch). Workers kept alive would keep
their first epoch's order, so fastseg passes `persistent_workers=False` (fastai ignores it anyway).
"""

import torch
from fastai.data.load import _loaders
from fastai.torch_core import to_device


def to_device_async(batch, device):
    """`batch` (tensors nested in tuples/lists) on `device`, copied with `non_blocking=True`: from
    pinned memory the copy overlaps with running kernels; from pageable memory it behaves as a
    blocking copy. The caching host allocator keeps the pinned source alive until the copy is done."""
    return to_device(batch, device, non_blocking=torch.device(device).type == "cuda")


class NonBlockingLoader:
    """Mixin for fastai DataLoaders: batches reach `self.device` by `to_device_async`."""

    def __iter__(self):
        self.randomize()
        self.before_iter()
        self._DataLoader__idxs = self.get_idxs()  # fastai's name-mangled sample order, drawn here
        for b in _loaders[self.fake_l.num_workers == 0](self.fake_l):
            if self.pin_memory and type(b) is list:  # pinning turns tuples into lists
                b = tuple(b)
            if self.device is not None:
                b = to_device_async(b, self.device)
            yield self.after_batch(b)
        self.after_iter()
        if hasattr(self, "it"):
            del self.it
