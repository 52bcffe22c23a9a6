"""Shi et al. (ICLR 2024) on CIFAR-10 as published: their weight and per-position neuron mask learning (method
``shi``, train/shi.py) on their 6-conv + 2-FC network (``cifar10net``), T = 8.

    python train/shi.py --config configs/shi_energy_cifar10_cifar10net.py --data-dir DATA

Published (PUBLISHED below; docs/reproduce.md): 0.63 % of the connections left, 8.5 M SOPs per image, 2.19 points
below the dense network (paper abstract). Hyper-parameters: xyshi2000/Unstructured-Pruning main.py defaults
(175134e; README: "use the default settings"): batch 16, T 8, 800 search + 200 finetune epochs, Adam lr 1e-4 for
weights and masks, weight decay 0 (masks too), no lr schedule, lambda 1e-11, masks initialised at 0, temperature
5 -> 1000 over the search, LIF tau 2 (decay 0.5), threshold 1, hard reset, ATan. The README does not give the
lambda of the published point; 1e-11 is main.py's default.

What jsnn runs differently (jsnn/runs/shi.py DIFFERENCES, recorded in results.json): the loss is cross-entropy
of each timestep's logits of a linear readout with 10 outputs (theirs: MSE of 100 spiking outputs voted in groups
of 10); the last finetune epoch is the result (theirs: the best test accuracy); jsnn's LIF takes the input
undivided (spikingjelly's LIFNode divides it by tau). The cost report counts SynOps as Shi et al.'s SOPs do (spike
inputs only, the first conv left out as MACs); the paper's connection percentage is results.json's
``connection_fraction`` (jsnn.sparsity.connection_penalty.connections).

The SynOps-budget variant at the paper's 8.5 M SOPs (not the published method, docs/methods.md):
    python train/energy.py --synops-budget 8.5e6 --dataset cifar10 --model cifar10net -T 8 --epochs 800 \
        --finetune-epochs 200 --batch-size 16 --lr 1e-4 --weight-decay 0 --schedule constant --optimizer adam
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Shi et al., ICLR 2024, Towards Energy Efficient SNNs: An Unstructured Pruning Framework",
    "setting": "CIFAR-10, Cifar10Net (6 conv x 256 + 2 FC), T = 8",
    "reported": "0.63 % of connections, 8.5 M SOPs, -2.19 points vs dense (abstract)",
    "source": "openreview.net/forum?id=eoSeaK4QJo (abstract); hyper-parameters: xyshi2000/Unstructured-Pruning",
    "command": "python train/shi.py --config configs/shi_energy_cifar10_cifar10net.py --data-dir DATA",
    "data": "cifar10",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "shi"
    config.penalty_lambda = 1e-11  # --penalty-lmbda's default
    config.finetune_epochs = 200
    config.mask_lr = 1e-4  # --prune-lr: unset, the search lr
    config.mask_weight_decay = 0.0
    config.mask_init = 0.0  # --mask-init-factor 0 0 0 0
    config.beta0 = 5.0  # --temp-scheduler 5 1000, over every search iteration
    config.beta1 = 1000.0
    config.optimizer = "adam"
    # data and model
    config.dataset = "cifar10"
    config.data_dir = placeholder(str)
    config.model = "cifar10net"
    config.timesteps = 8
    config.width = 1.0
    # optimisation: 800 search epochs, then the 200 finetune epochs above
    config.epochs = 800
    config.batch_size = 16
    config.lr = 1e-4
    config.momentum = 0.9  # unused by adam
    config.weight_decay = 0.0
    config.schedule = "constant"
    config.seed = 0
    # neuron: spikingjelly MultiStepLIFNode(tau=2, v_threshold=1, v_reset=0, ATan, detach_reset)
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=0.5, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = True
    config.weight_init = "kaiming_normal"
    return config
