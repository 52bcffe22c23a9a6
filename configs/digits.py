"""The digits presets: scikit-learn's bundled 8x8 digits, offline, minutes on 2 CPU cores.

    python train/dense.py --config configs/digits.py
    python train/imp.py --config configs/digits.py:imp --config.rounds=5
    python train/edge_popup.py --config configs/digits.py:edge_popup

``:METHOD`` picks the program's values (dense when left out). They are what each program
does with no flags on digits; copy and edit. The keys are the programs' flags (``_`` for
``-``; the neuron's settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

# method -> (epochs, learning rate, BN affine)
BUDGETS = {
    "dense": (15, 0.1, True),  # the dense net, about a minute
    "imp": (8, 0.1, True),  # per round (the dense net passes 98 % by epoch 4)
    "edge_popup": (20, 0.3, False),  # BN non-affine: nothing but the scores learns
}


def get_config(method: str = "dense") -> ml_collections.ConfigDict:
    if method not in BUDGETS:
        raise ValueError(f"configs/digits.py:METHOD, METHOD one of {sorted(BUDGETS)}; got {method!r}")
    epochs, lr, bn_affine = BUDGETS[method]
    config = ml_collections.ConfigDict()
    config.method = method
    # data and model: the small net, T = 4
    config.dataset = "digits"
    config.model = "digits_cnn"
    config.timesteps = 4
    config.width = 1.0
    # optimisation
    config.epochs = epochs
    config.batch_size = 64
    config.lr = lr
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.seed = 0
    # neuron (spikingjelly's LIFNode, tau = 4/3) and network
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=0.25, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = bn_affine
    config.weight_init = "kaiming_normal"
    if method == "imp":  # 15 rounds counting the dense round 0, 25 % per round, rewinding to epoch 2
        config.criterion = "magnitude"
        config.scope = placeholder(str)  # None: the criterion's distribution
        config.dns = False
        config.rounds = 15
        config.prune_rate = 0.25
        config.rewind_epoch = 2
        config.calibration_batches = 10
    if method == "edge_popup":  # one level: half of each layer's weights removed
        config.sparsity = (0.5,)
        config.distribution = "uniform"
        config.dense_encoding = False
        config.dense_classifier = False
    return config
