"""jsnn: lottery tickets in spiking neural networks, in pure functional JAX."""

__version__ = "0.1.0"
