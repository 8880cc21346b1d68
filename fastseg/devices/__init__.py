"""The devices wing: which device a command runs on (select), data-parallel training and evaluation
under torchrun / DDP (distributed), and which precision a device really gets (precision).

May import: fastseg's base modules (config, console, constants, errors) only.
"""
