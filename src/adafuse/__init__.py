"""adafuse: adaptive temporal fusion (AdaFuse, ICLR 2021) for efficient video action recognition."""

__version__ = "0.1.0"
