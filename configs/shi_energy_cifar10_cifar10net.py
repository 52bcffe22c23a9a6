"""Shi et al. (ICLR 2024) on CIFAR-10: weights and neurons pruned under an energy budget, their 6-conv + 2-FC
network (``cifar10net``), T = 8.

    python train/energy.py --config configs/shi_energy_cifar10_cifar10net.py --data-dir DATA

Published (PUBLISHED below; docs/reproduce.md): 0.63 % of the connections left, 8.5 M SOPs per image, 2.19 points
below the dense network (paper abstract). Hyper-parameters: xyshi2000/Unstructured-Pruning main.py defaults
(5892f35; README: "use the default settings"): batch 16, T 8, 800 search + 200 finetune epochs, Adam lr 1e-4 for
weights and masks, weight decay 0, no lr schedule, LIF tau 2 (decay 0.5), threshold 1, hard reset, ATan.

What jsnn runs differently (said here so the comparison is read right): the budget is a SynOps count the ticket
must meet (``--synops-budget``, set to the paper's 8.5 M) where Shi et al. fix a penalty weight lambda = 1e-11;
jsnn gates neurons per channel, Shi et al. per position (C, H, W); the loss is cross-entropy of the time-mean
logits (Shi et al.: MSE of 100 spiking outputs voted in groups of 10); jsnn's readout is a linear classifier with
10 outputs; jsnn's LIF takes the input undivided (spikingjelly's LIFNode divides it by tau). The cost report
counts SynOps as Shi et al.'s SOPs do (spike inputs only, the first conv left out as MACs).
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Shi et al., ICLR 2024, Towards Energy Efficient SNNs: An Unstructured Pruning Framework",
    "setting": "CIFAR-10, Cifar10Net (6 conv x 256 + 2 FC), T = 8",
    "reported": "0.63 % of connections, 8.5 M SOPs, -2.19 points vs dense (abstract)",
    "source": "openreview.net/forum?id=eoSeaK4QJo (abstract); hyper-parameters: xyshi2000/Unstructured-Pruning",
    "command": "python train/energy.py --config configs/shi_energy_cifar10_cifar10net.py --data-dir DATA",
    "data": "cifar10",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "energy"
    config.synops_budget = 8.5e6  # SynOps per image the ticket may need: the paper's 8.5 M SOPs
    config.finetune_epochs = 200
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
