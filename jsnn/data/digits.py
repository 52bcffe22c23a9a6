"""scikit-learn's 8x8 digits as jsnn splits them: the arrays read from its bundled CSV, and the stored split.

Below both readers of the digits (``jsnn.data.datasets.load_digits`` and the event version,
``jsnn.data.events.digits_dvs``), so that neither imports the other.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from jsnn.data.errors import DataNotFoundError

# The digits split, stored: the train and test indices (int16) that scikit-learn's
# ``train_test_split(arange(1797), test_size=0.2, stratify=labels, random_state=0)`` gives (scikit-learn 1.9.1;
# tests/test_data.py checks them against the installed one). Importing sklearn.model_selection for the split took
# most of a digits run's set-up, and stored indices keep the split the same under any scikit-learn.
DIGITS_SPLIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_split.npz")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as ``load_digits`` reads them: images [1797, 8, 8] (float64, 0..16) and
    labels [1797] (int32), parsed from its ``digits.csv.gz`` without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else None
    if path is None or not os.path.exists(path):
        raise DataNotFoundError("the digits dataset is scikit-learn's: pip install scikit-learn (jsnn's "
                                "requirements name it)")
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int32)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into ``digits_arrays()``: 1437 and 360, each class in the proportions of the whole."""
    with np.load(DIGITS_SPLIT) as split:
        return split["train"].astype(np.int64), split["test"].astype(np.int64)
