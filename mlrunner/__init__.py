"""mlrunner: run a LOT of machine-learning experiments on a pool of GPUs, and never lose one."""

__version__ = "1.0.0.dev0"
