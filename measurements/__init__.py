"""Measurement scripts: one-off timings and comparisons, run by hand, results in RESULTS.md.

Run each from the repository root as ``python -m measurements.<name>`` (the shell scripts with
``bash measurements/<name>.sh``). The asv benchmark modules live in ``benchmarks/``; asv does not
scan this folder.

- ``suite_sizes``: per-iteration cost of the algorithms at suite sizes, idle or beside busy loops.
- ``busy_machine``: ``suite_sizes`` for joint EM under each OpenMP wait policy, idle and busy.
- ``compile_pays``: ``torch.compile`` time against the time it saves per EM iteration.
- ``measure_kernels``: kernel times against the machine's DGEMM peak (docs/performance.md).
- ``compare_devices``: equality of two runs of one suite on different devices.
- ``compare_peers``: joint EM next to flexmix (R) and cgmm on the same data and start.
- ``stream_em``: EM on a memory-mapped NPZ file larger than memory.
- ``gpu_check.sh``: kernels and the smoke suite on CUDA against the CPU.
- ``RESULTS.md``: what these scripts measured, and where.
"""
