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
import jax.numpy as jnp  # noqa: E402
from mesh_steps import differences, digits, two_steps  # noqa: E402  (after XLA is configured)

from jsnn import conv, conv_kernel  # noqa: E402
from jsnn.models import build_model  # noqa: E402

config, ds, _ = digits(timesteps=4)
config = dataclasses.replace(config, precision="bf16")
model = build_model(config, ds.num_classes)
out, hlo = {}, {}
out[2], hlo[2] = two_steps(config, ds, model, 2, compiled_text=True)
# one device of this 2-device process: conv2d keeps XLA's convolution there (a process with several devices
# runs the kernel only inside the trainer's per-device body); let it take the kernel, as a 1-device process does
everywhere = conv._amx_applies
conv._amx_applies = lambda x, kernel, stride, padding: (
    x.dtype == jnp.bfloat16 and conv_kernel.supports(x.shape, kernel.shape, stride, padding)
    and conv_kernel.unavailable() is None)
out[1], hlo[1] = two_steps(config, ds, model, 1, compiled_text=True)
conv._amx_applies = everywhere


def kernel_batches(text):
    """The image axis of every AMX forward call's result in a compiled step (T x the images it computes)."""
    calls = [line for line in text.splitlines() if 'custom_call_target="jsnn_amx_conv_forward"' in line]
    return sorted({int(re.search(r"f32\[(\d+),", line).group(1)) for line in calls})


print(json.dumps({"two_devices_vs_one": max(differences(out[2], out[1])),
                  "kernel_batches": {n: kernel_batches(h) for n, h in hlo.items()}}))
sys.exit(0)
