"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=2: the programs' f32 train step, whose spike
convolutions run event-driven (jsnn.event_conv) inside each device's part of the step, on 2 devices against 1;
prints the largest difference and the batch each kernel call sees."""
import json
import re
import sys

import jax

from jsnn import xla_flags

xla_flags.configure()  # as the programs run (before jax.device_count starts the backend)
assert jax.device_count() == 2, jax.devices()
from mesh_steps import custom_calls_on_one_device, differences, digits, two_steps  # noqa: E402  (after XLA is configured)

from jsnn import event_conv  # noqa: E402

config, ds, model = digits(timesteps=4)
out, hlo = {}, {}
out[2], hlo[2] = two_steps(config, ds, model, 2, compiled_text=True)
with custom_calls_on_one_device():  # one device of this process: the kernels, as a 1-device process runs them
    out[1], hlo[1] = two_steps(config, ds, model, 1, compiled_text=True)


def kernel_batches(text, target):
    """The image axis of every call of ``target`` in a compiled step: of its input (T x the images it computes)."""
    calls = [line for line in text.splitlines() if f'custom_call_target="{event_conv.TARGETS[target]}"' in line]
    return sorted({int(re.search(r"operand_layout_constraints=\{f32\[(\d+),", line).group(1)) for line in calls})


print(json.dumps({"two_devices_vs_one": max(differences(out[2], out[1])),
                  "kernel_batches": {f"{t}/{n}": kernel_batches(h, t) for n, h in hlo.items()
                                     for t in event_conv.TARGETS}}))
sys.exit(0)
