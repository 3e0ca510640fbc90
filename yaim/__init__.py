"""yaim: yet another IP manager."""

__version__ = "0.1.0"
