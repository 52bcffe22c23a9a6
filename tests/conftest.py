"""The test process runs jsnn as the programs do: with jsnn's XLA flag (jsnn/xla_flags.py), set
before any test starts a JAX backend (the programs set it at start-up, train/flags.py)."""
from jsnn import xla_flags

xla_flags.configure()
