"""prunectl: prune, fine-tune, train from scratch and compare, after Liu et al. (ICLR 2019)."""

__version__ = "0.1.0"
