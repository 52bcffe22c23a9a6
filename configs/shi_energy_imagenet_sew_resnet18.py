"""Shi et al. (ICLR 2024) on ImageNet: weights and neurons of SEW-ResNet-18 (``sew_resnet18``, ADD joins,
Fang et al. NeurIPS 2021) pruned under an energy budget, T = 4, several processes.

    # 4 processes, one per GPU (SLURM: --ntasks=4 --gpus-per-task=1), one global batch of 256 over them;
    # elsewhere JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID per process (docs/reliability.md)
    srun python train/energy.py --config configs/shi_energy_imagenet_sew_resnet18.py --data-dir DATA \\
        --config.synops_budget=N

ImageNet is streamed from a tfds-prepared directory under --data-dir (``tfds:imagenet2012``, jsnn/data/streaming.py,
docs/data.md), never loaded whole: a random resized crop to 224 and a flip in training, the shorter side resized to
256 and the centre 224 x 224 in evaluation, as Shi et al.'s main.py (RandomResizedCrop(224), Resize(256) +
CenterCrop(224)). Published: the dense SEW-ResNet-18 (ADD) accuracy at T = 4 (Fang et al. 2021) and Shi et al.'s
pruned points are in the papers' ImageNet tables (not checked in this session, so not copied: give the SOPs compared
with as ``synops_budget``). Hyper-parameters: xyshi2000/Unstructured-Pruning README (5892f35): torchrun with 4
processes, batch 64 per process (256 in all), T 4, 280 search + 40 finetune epochs, lr 1e-3 (search; Adam, main.py's
default optimizer) and 1e-4 (finetune), cross-entropy, cosine; IF neurons (spikingjelly MultiStepIFNode: jsnn's LIF
with decay 1), threshold 1, hard reset, ATan.

What jsnn runs differently: the finetune keeps the search's lr schedule; the budget is a SynOps count instead of
lambda; neurons are gated per channel and the neurons feeding a SEW join are never gated (jsnn.sparsity.gated_synops);
joins feed spike counts 0, 1, 2, ... to the next block, which jsnn's cost report counts as MACs at every call
where a count exceeds 1 (NeuroBench's rule) where Shi et al. count them as SOPs; NIR export refuses decay 1
(snnTorch imports IF neurons wrongly), so export a ticket of this recipe with ``--config.lif.decay`` < 1.
"""
import ml_collections
from ml_collections.config_dict import placeholder

PUBLISHED = {
    "paper": "Shi et al., ICLR 2024 (pruning); network and dense reference: Fang et al., NeurIPS 2021 (SEW-ResNet)",
    "setting": "ImageNet, SEW-ResNet-18 (ADD), 224 x 224, T = 4, 4 processes x batch 64",
    "reported": "dense and pruned points: the SEW and Shi et al. ImageNet tables (not checked here)",
    "source": "xyshi2000/Unstructured-Pruning README and models/sew_resnet.py",
    "command": ("srun python train/energy.py --config configs/shi_energy_imagenet_sew_resnet18.py "
                "--data-dir DATA --config.synops_budget=N"),
    "data": "tfds:imagenet2012 (streamed from a tfds-prepared directory)",
}


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = "energy"
    config.synops_budget = placeholder(float)  # required: the SOPs of the published point compared with
    config.finetune_epochs = 40
    config.optimizer = "adam"
    config.dataset = "tfds:imagenet2012"
    config.data_dir = placeholder(str)
    config.model = "sew_resnet18"
    config.timesteps = 4
    config.width = 1.0
    # optimisation: 280 search epochs, then the 40 finetune epochs above; the global batch over 4 processes
    config.epochs = 280
    config.batch_size = 256
    config.lr = 1e-3
    config.momentum = 0.9  # unused by adam
    config.weight_decay = 0.0
    config.schedule = "cosine"
    config.seed = 0
    # neuron: spikingjelly MultiStepIFNode(v_threshold=1, v_reset=0, ATan, detach_reset): decay 1
    config.lif = ml_collections.ConfigDict(dict(
        surrogate="atan", surrogate_width=placeholder(float), decay=1.0, threshold=1.0, reset="hard",
        detach_reset=True, remat=False))
    config.bn_affine = True
    config.weight_init = "kaiming_normal"
    return config
