"""Shi et al. (ICLR 2024) on CIFAR10-DVS: weights and neurons pruned under an energy budget, TET's VGGSNN
(``vggsnn``) at 48 x 48, T = 10.

    python train/energy.py --config configs/shi_energy_cifar10dvs_vggsnn.py --data-dir DATA \\
        --config.synops_budget=N

Published: the paper's CIFAR10-DVS table (not checked in this session, so no number is copied here: give the
SOPs of the point you compare with as ``synops_budget``). The dense reference is TET's VGGSNN, 83 % top-1 on CIFAR10-DVS
(Deng et al. ICLR 2022, abstract; T = 10 and the TET loss). Hyper-parameters: xyshi2000/Unstructured-Pruning README
(5892f35): batch 64, T 10, 240 search + 80 finetune epochs, SGD lr 0.025 (weights; momentum not given: jsnn's 0.9),
masks Adam 0.001, finetune lr 0.0025, cross-entropy, cosine, TET, augmentation; frames: spikingjelly's
CIFAR10DVS split_by='number' (equal event counts), resized to 48 x 48, a 9:1 split per class.

What jsnn runs differently: the TET loss is not in jsnn (plain cross-entropy of the time-mean logits); the
finetune keeps the search's lr (0.025, cosine) where Shi et al. restart at 0.0025; the mask logits take
jsnn's energy preset lr (jsnn/runs/energy.py ENERGY_PRESETS) where Shi et al. use Adam 0.001;
the budget is a SynOps count instead of a penalty weight lambda; neurons are gated per channel; jsnn's frames sum
the events into 48 x 48 (Shi et al. resize 128 x 128 frames with antialiasing); TET's convs carry a bias before BN
(it cancels under BN; jsnn's convs have none).
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Shi et al., ICLR 2024 (pruning); network and dense reference: Deng et al., ICLR 2022 (TET)",
    "setting": "CIFAR10-DVS, VGGSNN, 48 x 48, T = 10",
    "reported": "dense VGGSNN with TET: 83 % top-1 (TET abstract); pruned points: the paper's CIFAR10-DVS table",
    "source": "xyshi2000/Unstructured-Pruning README; Gus-Lab/temporal_efficient_training models/VGG_models.py",
    "command": ("python train/energy.py --config configs/shi_energy_cifar10dvs_vggsnn.py --data-dir DATA "
                "--config.synops_budget=N"),
    "data": "cifar10_dvs",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "energy"
    config.synops_budget = placeholder(float)  # required: the SOPs of the published point compared with
    config.finetune_epochs = 80
    config.optimizer = "sgd"
    # data: 10 frames of equal event counts at 48 x 48, event counts
    config.dataset = "cifar10_dvs"
    config.data_dir = placeholder(str)
    config.timesteps = 10
    config.frames_by = "count"
    config.frame_size = 48
    config.binarize = False
    config.model = "vggsnn"
    config.width = 1.0
    # optimisation: 240 search epochs, then the 80 finetune epochs above
    config.epochs = 240
    config.batch_size = 64
    config.lr = 0.025
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.schedule = "cosine"
    config.seed = 0
    # neuron: Shi et al.'s MultiStepLIFNode(tau=2) (TET's own LIFSpike: tau 0.5, threshold 1, hard reset)
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=0.5, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = True
    config.weight_init = "kaiming_normal"
    return config
