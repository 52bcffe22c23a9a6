"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=2: the programs' train step at T = 16, whose LIF
layers run through the C++ kernel (JSNN_LIF_IMPL=auto), on 2 devices against 1 device and against the scan;
prints the largest differences, how often the kernel is called and the batch each call sees."""
import json
import os
import re
import sys

import jax

from jsnn import xla_flags

xla_flags.configure()  # as the programs run (before jax.device_count starts the backend)
assert jax.device_count() == 2, jax.devices()
from mesh_steps import differences, digits, two_steps  # noqa: E402  (after XLA is configured)

config, ds, model = digits(timesteps=16)
out, hlo = {}, {}
for impl, n in (("auto", 1), ("auto", 2), ("scan", 2)):
    os.environ["JSNN_LIF_IMPL"] = impl
    out[(impl, n)], hlo[(impl, n)] = two_steps(config, ds, model, n, compiled_text=True)


def largest_difference(a, b):
    return max(differences(out[a], out[b]))


def kernel_batches(text):
    """The batch axis (1, after T) of every kernel call's result in a compiled step: each device's own part
    where the partitioner splits the call, the whole batch where it gathers the currents first."""
    calls = [line for line in text.splitlines() if "custom-call(" in line and 'custom_call_target="jsnn_lif' in line]
    return sorted({int(re.search(r"f32\[\d+,(\d+)", line).group(1)) for line in calls})


print(json.dumps({"two_devices_vs_one": largest_difference(("auto", 2), ("auto", 1)),
                  "kernel_vs_scan": largest_difference(("auto", 2), ("scan", 2)),
                  "kernel_batches": {f"{i}/{n}": kernel_batches(h) for (i, n), h in hlo.items()}}))
sys.exit(0)
