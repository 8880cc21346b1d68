"""The evaluate wing: metrics from one streaming confusion matrix (metrics), scoring a model on a
split at native resolution with a bootstrap interval (scoring), test-time augmentation (tta),
`predict` on image files (predict), ONNX export (export), the run report (report) and the figures
of predictions and confusions (figures).

May import: fastseg's base modules, io, devices, data and models. Never train or tools.
"""
