"""The digits_dvs presets: the offline event stand-in (scikit-learn's digits as N-MNIST-style saccades).

    python train/imp.py --config configs/digits_dvs.py:imp
    python train/edge_popup.py --config configs/digits_dvs.py:edge_popup
    python train/dense.py --config configs/digits_dvs.py

``:METHOD`` picks the program's values (dense when left out). They are what each program does with
``--dataset digits_dvs`` and no other flag (jsnn/config.py, where each value's source is written;
docs/events.md); copy and edit. The keys are the programs' flags (``_`` for ``-``; the neuron's
settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

# method -> (epochs, learning rate, BN affine): digits' budgets
BUDGETS = {
    "dense": (15, 0.1, True),
    "imp": (8, 0.1, True),  # per round
    "edge_popup": (20, 0.3, False),  # BN non-affine: nothing but the scores learns
}


def get_config(method: str = "dense") -> ml_collections.ConfigDict:
    if method not in BUDGETS:
        raise ValueError(f"configs/digits_dvs.py:METHOD, METHOD one of {sorted(BUDGETS)}; got {method!r}")
    epochs, lr, bn_affine = BUDGETS[method]
    config = ml_collections.ConfigDict()
    config.method = method
    # data: 4 frames of equal time windows, 34x34 events summed into 8x8, counts
    config.dataset = "digits_dvs"
    config.data_dir = placeholder(str)  # nothing to put there: simulated from scikit-learn's digits
    config.timesteps = 4
    config.frames_by = "time"
    config.frame_size = 8
    config.binarize = False
    # model
    config.model = "digits_cnn"
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
    if method == "imp":  # 15 rounds counting the dense round 0, 25 % per round
        config.criterion = "magnitude"
        config.scope = placeholder(str)  # None: the criterion's distribution
        config.dns = False
        config.rounds = 15
        config.prune_rate = 0.25
        config.rewind_epoch = 2
        config.calibration_batches = 10
    if method == "edge_popup":
        config.sparsity = (0.5,)
        config.distribution = "uniform"
        config.dense_encoding = False
        config.dense_classifier = False
    return config
