"""The io wing: what fastseg writes to disk and reads back. Atomic writes (atomic), nested state
as safetensors + JSON for checkpoints, never pickle (serialize), and the run folder layout, its
lock, metrics.csv and config.json (runs).

May import: fastseg's base modules (config, console, constants, errors) only.
"""
