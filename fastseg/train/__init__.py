"""The train wing: `fastseg fit` and `find-lr`. The fit orchestration and resume (fit), the Learner
a FitConfig builds (learner), the loss (losses), schedules (schedule), lr_find and `--lr auto`
(lr_find), fastai callbacks (callbacks), the per-epoch recorder writing metrics.csv and checkpoints
(recorder), TensorBoard logging (tensorboard), the progress bar (progress), the host-sync fast path
(fastpath) and training figures (plots).

May import: fastseg's base modules, io, devices, data, models, and evaluate.metrics (the metrics a
fit reports are the evaluation's). Never the rest of evaluate, nor tools.
"""
