"""DVS128 Gesture, VGG-11 at 64x64, T = 16 (frames as SpikingResformer, Shi et al. CVPR 2024).

    python train/imp.py --config configs/dvs_gesture_vgg11.py:imp
    python train/edge_popup.py --config configs/dvs_gesture_vgg11.py:edge_popup
    python train/dense.py --config configs/dvs_gesture_vgg11.py --data-dir DATA

``:METHOD`` picks the program's values (dense when left out). They are what each program does with
``--dataset dvs_gesture`` and no other flag (jsnn/config.py, where each value's source is written;
docs/events.md); copy and edit. The keys are the programs' flags (``_`` for ``-``; the neuron's
settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

# method -> (epochs, learning rate, BN affine): jsnn's CIFAR recipe (Kim et al.)
BUDGETS = {
    "dense": (300, 0.1, True),
    "imp": (300, 0.1, True),  # per round
    "edge_popup": (300, 0.3, False),  # BN non-affine: nothing but the scores learns
}


def get_config(method: str = "dense") -> ml_collections.ConfigDict:
    if method not in BUDGETS:
        raise ValueError(f"configs/dvs_gesture_vgg11.py:METHOD, METHOD one of {sorted(BUDGETS)}; got {method!r}")
    epochs, lr, bn_affine = BUDGETS[method]
    config = ml_collections.ConfigDict()
    config.method = method
    # data: 16 frames of equal event counts, 128x128 events summed into 64x64, counts
    config.dataset = "dvs_gesture"
    config.data_dir = placeholder(str)  # --data-dir: tonic's DVSGesture/ or IBM's DvsGesture/ (docs/events.md)
    config.timesteps = 16
    config.frames_by = "count"
    config.frame_size = 64
    config.binarize = False
    # model
    config.model = "vgg11"
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
        config.rewind_epoch = 20
        config.calibration_batches = 10
    if method == "edge_popup":
        config.sparsity = (0.1, 0.3, 0.5, 0.7, 0.9)
        config.distribution = "uniform"
        config.dense_encoding = False
        config.dense_classifier = False
    return config
