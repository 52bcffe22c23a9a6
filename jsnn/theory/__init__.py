"""The paper's theory, made executable (SPEC §6): crisis probability and spike flips
(``crisis``), the strong-LTH construction (``slth``). Pure functions over arrays; the
program ``train/theory.py`` wires them to networks and writes results and figures."""
from jsnn.theory import crisis, flips, slth

__all__ = ["crisis", "flips", "slth"]
