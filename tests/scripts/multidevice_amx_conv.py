"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=2: the programs' bf16 train step, whose inner
convolutions run as the AMX kernel (jsnn.conv_kernel) inside each device's part of the step, on 2 devices
against 1; prints the largest difference and the batch each kernel call sees."""
import dataclasses
import json
import re
import sys

import jax

from jsnn import xla_flags

xla_flags.configure()  # as the programs run (before jax.device_count starts the backend)
assert jax.device_count() == 2, jax.devices()
from mesh_steps import custom_calls_on_one_device, differences, digits, two_steps  # noqa: E402  (after XLA is configured)

from jsnn.models import build_model  # noqa: E402

config, ds, _ = digits(timesteps=4)
config = dataclasses.replace(config, precision="bf16")
model = build_model(config, ds.num_classes)
out, hlo = {}, {}
out[2], hlo[2] = two_steps(config, ds, model, 2, compiled_text=True)
with custom_calls_on_one_device():  # one device of this process: the kernels, as a 1-device process runs them
    out[1], hlo[1] = two_steps(config, ds, model, 1, compiled_text=True)


def kernel_batches(text):
    """The image axis of every AMX forward call's result in a compiled step (T x the images it computes)."""
    calls = [line for line in text.splitlines() if 'custom_call_target="jsnn_amx_conv_forward"' in line]
    return sorted({int(re.search(r"f32\[(\d+),", line).group(1)) for line in calls})


print(json.dumps({"two_devices_vs_one": max(differences(out[2], out[1])),
                  "kernel_batches": {n: kernel_batches(h) for n, h in hlo.items()}}))
sys.exit(0)
