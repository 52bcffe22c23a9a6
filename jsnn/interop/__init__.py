"""jsnn networks in and out of NIR, the neuromorphic exchange format (``nir`` on PyPI).

    to_nir(model, variables, image_shape) -> nir.NIRGraph    (nir_export.py)
    from_nir(graph) -> (NIRNetwork, Variables)                (nir_import.py)
    snntorch_module(graph) / norse_module(graph)              (torch_sims.py, needs torch)

``nir_export.py`` documents the mapping (LIF parameters at NIR_DT, BN folding,
max pool as sum pool + threshold neuron, average pool scale, flatten order).
"""
from jsnn.interop.nir_export import (
    NIR_DT,
    ExportError,
    fold_bn,
    lif_from_nir,
    lif_to_nir,
    or_neuron,
    to_nir,
)
from jsnn.interop.nir_import import NIRNetwork, from_nir

__all__ = ["NIR_DT", "ExportError", "fold_bn", "lif_from_nir", "lif_to_nir", "or_neuron", "to_nir",
           "NIRNetwork", "from_nir"]
