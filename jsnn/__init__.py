"""jsnn: lottery tickets in spiking neural networks, in pure functional JAX."""
from jsnn import xla_flags as _xla_flags

# Before anything below can start a JAX backend: XLA reads XLA_FLAGS only then.
_xla_flags.configure()

__version__ = "0.1.0"
