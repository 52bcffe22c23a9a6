"""Throughput benchmarks: jsnn against SpikingJelly, snnTorch, spyx and plain PyTorch (issue #6)."""
