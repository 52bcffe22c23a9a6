"""The small digits subsets the training tests share (one compilation per test module)."""
import dataclasses

from jsnn.data import load_dataset


def digits_subset(n_train: int, n_test: int):
    """scikit-learn's digits cut to its first ``n_train`` training and ``n_test`` test images."""
    full = load_dataset("digits")
    return dataclasses.replace(full, train_images=full.train_images[:n_train], train_labels=full.train_labels[:n_train],
                               test_images=full.test_images[:n_test], test_labels=full.test_labels[:n_test])
