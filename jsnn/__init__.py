"""jsnn: lottery tickets in spiking neural networks, in pure functional JAX."""
from jsnn import xla_flags as _xla_flags

# Before anything can start a JAX backend (XLA reads XLA_FLAGS only then): jsnn's CPU
# convolutions for a user's own script too, not only for the programs (jsnn/xla_flags.py).
_xla_flags.configure()

__version__ = "0.1.0"
