"""Edge-popup on CIFAR-100, SNN-VGG-16, T = 5: sub-networks of a random SNN, weights never trained
(paper Sec. 5: lr 0.3, batch 128, T = 5, 300 epochs, BN non-affine).

    python train/edge_popup.py --config configs/edge_popup_cifar100_vgg16.py
    python train/edge_popup.py --config configs/edge_popup_cifar100_vgg16.py --config.sparsity=0.5 --config.epochs=100

Copy and edit: every value the experiment sets is here. The keys are train/edge_popup.py's flags
(``_`` for ``-``; the neuron's settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Yao et al., 2023, Probabilistic Modeling: Proving the LTH in SNNs (this project's paper)",
    "setting": "CIFAR-100, SNN-VGG-16, T = 5, edge-popup at sparsity 0.1 ... 0.9",
    "reported": "curves only (paper Fig. 3): good sub-networks of the random SNN at every sparsity; no table",
    "source": "the paper, Sec. 5 and Fig. 3",
    "command": "python train/edge_popup.py --config configs/edge_popup_cifar100_vgg16.py --data-dir DATA",
    "data": "cifar100",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "edge_popup"
    # data and model
    config.dataset = "cifar100"
    config.model = "vgg16"
    config.timesteps = 5
    config.width = 1.0
    # optimisation of the scores (SGD, cosine, 300 epochs)
    config.epochs = 300
    config.batch_size = 128
    config.lr = 0.3
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.seed = 0
    # neuron (spikingjelly's LIFNode, tau = 4/3) and network: BN non-affine, nothing but the scores learns
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=0.25, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = False
    config.weight_init = "kaiming_normal"
    # the search: fraction of weights REMOVED per layer at each level, every layer searched
    config.sparsity = (0.1, 0.3, 0.5, 0.7, 0.9)
    config.distribution = "uniform"  # per-layer targets: uniform (edge-popup's) or erk
    config.dense_encoding = False
    config.dense_classifier = False
    return config
