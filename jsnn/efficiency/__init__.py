"""What a ticket costs to run (issue 13): ``counting`` measures a model on images exactly
(synaptic operations, firing, footprint, energy); ``report`` does it for every ticket of a
finished run and writes the tables and the accuracy-vs-energy figure."""
from jsnn.efficiency.counting import (
    DIRECT_ENCODING_NOTE,
    E_AC_J,
    E_MAC_J,
    ENERGY_SOURCE,
    EnergyModel,
    footprint,
    kept_mask,
    measure,
    measure_dataset,
    measure_synops,
    measure_synops_dataset,
    ticket_entry,
)

__all__ = ["DIRECT_ENCODING_NOTE", "E_AC_J", "E_MAC_J", "ENERGY_SOURCE", "EnergyModel", "footprint", "kept_mask",
           "measure", "measure_dataset", "measure_synops", "measure_synops_dataset", "ticket_entry"]
