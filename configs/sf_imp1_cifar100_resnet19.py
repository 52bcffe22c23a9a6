"""SF-IMP-1 on CIFAR-100, Res-SNN-19, T = 5: IMP pruning by the paper's SF criterion (Sec. 6).

    python train/imp.py --config configs/sf_imp1_cifar100_resnet19.py
    python train/imp.py --config configs/sf_imp1_cifar100_resnet19.py --config.rounds=5 --config.lif.decay=0.5

Copy and edit: every value the experiment sets is here. The keys are train/imp.py's flags
(``_`` for ``-``; the neuron's settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Yao et al., 2023, Probabilistic Modeling: Proving the LTH in SNNs (this project's paper)",
    "setting": "CIFAR-100, Res-SNN-19, T = 5, SF-IMP-1 against IMP",
    "reported": "curves only (paper Fig. 5): SF-IMP-1 above IMP at every sparsity on CIFAR-100; no table",
    "source": "the paper, Sec. 6 and Fig. 5",
    "command": "python train/imp.py --config configs/sf_imp1_cifar100_resnet19.py --data-dir DATA",
    "data": "cifar100",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "imp"
    # data and model
    config.dataset = "cifar100"
    config.model = "resnet19"
    config.timesteps = 5
    config.width = 1.0
    # optimisation, per round (Kim et al.: SGD, cosine, 300 epochs)
    config.epochs = 300
    config.batch_size = 128
    config.lr = 0.1
    config.momentum = 0.9
    config.weight_decay = 5e-4
    config.schedule = "cosine"
    config.seed = 0
    # neuron (spikingjelly's LIFNode, tau = 4/3) and network
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=0.25, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = True
    config.weight_init = "kaiming_normal"
    # pruning: 15 rounds counting the dense round 0, 25 % of the remaining weights per round,
    # rewinding to epoch 20 of round 0
    config.criterion = "sf"
    config.scope = placeholder(str)  # None: the criterion's distribution (matched for sf: each layer loses what
    #                                   global magnitude pruning would take, SF picks which)
    config.dns = False
    config.rounds = 15
    config.prune_rate = 0.25
    config.rewind_epoch = 20
    config.calibration_batches = 10
    return config
