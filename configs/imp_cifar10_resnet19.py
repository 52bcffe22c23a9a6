"""IMP with magnitude pruning on CIFAR-10, Res-SNN-19, T = 5 (Kim et al. ECCV 2022, "Exploring Lottery Ticket
Hypothesis in Spiking Neural Networks"); the CIFAR-100 run is configs/imp_cifar100_resnet19.py.

    python train/imp.py --config configs/imp_cifar10_resnet19.py --data-dir DATA

Published (SPEC.md §4, Kim et al.'s IMP, mean of 5 runs): ResNet-19 on CIFAR-10 at sparsity 68.30 / 89.91 / 95.69 /
98.13 %: 93.47 / 93.49 / 93.22 / 92.43 % (rounds 4, 8, 11, 14 of 25 % each). The keys are train/imp.py's flags
(``_`` for ``-``; the neuron's settings under ``lif``); a flag given on the command line wins.
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Kim et al., ECCV 2022, Exploring Lottery Ticket Hypothesis in SNNs",
    "setting": "CIFAR-10, Res-SNN-19, T = 5, IMP (magnitude, global, rewind to epoch 20)",
    "reported": "93.47 / 93.49 / 93.22 / 92.43 % at sparsity 68.30 / 89.91 / 95.69 / 98.13 %",
    "source": "SPEC.md section 4 (Kim et al.'s reported IMP accuracies, mean of 5 runs)",
    "command": "python train/imp.py --config configs/imp_cifar10_resnet19.py --data-dir DATA",
    "data": "cifar10",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "imp"
    config.dataset = "cifar10"
    config.data_dir = placeholder(str)
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
    # pruning: 15 rounds counting the dense round 0, 25 % of the remaining weights per round, rewind to epoch 20
    config.criterion = "magnitude"
    config.scope = placeholder(str)
    config.dns = False
    config.rounds = 15
    config.prune_rate = 0.25
    config.rewind_epoch = 20
    config.calibration_batches = 10
    return config
