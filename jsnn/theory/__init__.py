"""The paper's theory, made executable (paper Sec. 3-4): crisis probability and spike flips
(``crisis``, ``flips``), the strong-LTH construction (``slth``), as pure functions over
arrays; ``experiments`` wires them to a trained digits SNN and ``figures`` plots the
results (the program ``train/theory.py`` parses flags and calls ``experiments.run``)."""
from jsnn.theory import crisis, flips, slth

__all__ = ["crisis", "experiments", "figures", "flips", "slth"]
