"""The devices wing: which device a command runs on (select), data-parallel training and evaluation
under torchrun / DDP (distributed), which precision a device really gets (precision), and the
asynchronous copy of batches onto the device (transfer).

May import: fastseg's base modules (config, console, constants, errors) only.
"""
