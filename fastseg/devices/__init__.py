"""The devices wing: which device a command runs on (select), every collective between processes
(collectives), data-parallel training and evaluation on DDP (distributed), starting the processes
of `--nproc` (launch), which precision a device really gets (precision), and the asynchronous copy
of batches onto the device (transfer).

May import: fastseg's base modules (config, console, constants, errors) only.
"""
