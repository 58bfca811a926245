"""online-em on data larger than memory, against in-memory joint EM (issue 22, part 1).

Usage::

    python -m measurements.stream_online_em --n 10000000 --dir /tmp/moe-stream

Writes ``X`` (n x d) and ``y`` of a linear-expert MoE (k experts, softmax gate, sigma = 0.5)
once, block by block, as an uncompressed NPZ and as a Parquet file (row groups of 10^5 rows,
plain encoding without compression: random floats do not compress),
then runs each measurement in a fresh process (so that peak memory is its own):

* ``online-parquet``: online-em passes over the Parquet file (:func:`open_parquet`, the next
  row group read in the background);
* ``online-npz``: the same over the NPZ, its row slices read from the file (:func:`open_npz_rows`);
* ``online-npz-mmap``: the same over the memory-mapped NPZ (:func:`open_npz_memmap`);
* ``joint-em``: joint EM on the arrays loaded into memory (the per-row time to compare with),
  run until it stops by itself (its default ``tol``), which gives the maximum likelihood the
  online fits are compared with.

The kinds run in interleaved rounds (``--rounds``, medians reported). Each prints seconds per
pass (iteration), wall and CPU nanoseconds per row, the training NLL (computed
chunk by chunk over the file after the fit) and the peak resident memory of its process
(``VmHWM``), with ``RssAnon``/``RssFile`` at the end (mapped file pages count as resident; the
kernel drops them under pressure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from measurements.stream_em import proc_status, write_npz
from moebench import InitSpec, Iterate, Problem
from moebench.seeding import torch_generator
from moebench_plugins.algorithms.joint_em import JointEM
from moebench_plugins.algorithms.online_em import OnlineEM
from moebench_plugins.datasets.arrays import open_npz_memmap, open_npz_rows, open_parquet
from moebench_plugins.models.regression import RegressionMoE

_ROW_GROUP = 100_000


def write_parquet(npz: str, path: str) -> None:
    """Copy the NPZ's arrays into a Parquet file, one row group at a time."""
    arrays = open_npz_memmap(npz)
    X, y = arrays["X"], arrays["y"]
    d = X.shape[1]
    schema = pa.schema([(f"x{j}", pa.float64()) for j in range(d)] + [("y", pa.float64())])
    # random floats do not compress: plain encoding, as a user would store them
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
        for s in range(0, X.shape[0], _ROW_GROUP):
            block = np.asarray(X[s:s + _ROW_GROUP])
            cols = [pa.array(block[:, j]) for j in range(d)] + [pa.array(y[s:s + _ROW_GROUP])]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=_ROW_GROUP)


def _nll(model: RegressionMoE, params: dict, X, y) -> float:
    """The mean training NLL, chunk by chunk over the source."""
    total, n = 0.0, int(X.shape[0])
    for s in range(0, n, 1_000_000):
        xb = torch.as_tensor(np.asarray(X[s:s + 1_000_000]))
        yb = torch.as_tensor(np.asarray(y[s:s + 1_000_000]))
        total += float(model.log_likelihood(params, xb, yb).sum())
    return -total / n


def measure(kind: str, directory: str, k: int, passes: int, batch_size: int) -> dict:
    """One measurement (run in its own process by :func:`main`)."""
    torch.set_grad_enabled(False)
    npz = os.path.join(directory, "moe.npz")
    if kind == "online-parquet":
        X, y = open_parquet(os.path.join(directory, "moe.parquet"), target="y", prefetch=True)
    elif kind == "online-npz":
        rows = open_npz_rows(npz)
        X, y = rows["X"], rows["y"]
    else:
        arrays = open_npz_memmap(npz)
        X, y = arrays["X"], arrays["y"]
        if kind == "joint-em":
            X, y = torch.from_numpy(np.array(X)), torch.from_numpy(np.array(y))
    n, d = X.shape
    model = RegressionMoE(RegressionMoE.Params(k=k, sigma=0.5), n_features=d)
    init = model.init_params(InitSpec(), torch_generator(0))
    if kind == "joint-em":
        algorithm, limit = JointEM(), 1000
    else:
        algorithm, limit = OnlineEM(OnlineEM.Params(batch_size=batch_size)), passes
    stamps: list[tuple[float, float]] = []

    def callback(it: Iterate) -> bool:
        stamps.append((time.perf_counter(), time.process_time()))
        return it.iteration < limit

    out = algorithm.fit(Problem(model, X, y, torch_generator(1)), init, callback)
    wall, cpu = (np.diff([s[j] for s in stamps]) for j in (0, 1))
    return {
        "kind": kind, "n": int(n), "d": int(d), "k": k, "threads": torch.get_num_threads(),
        "iterations": len(wall), "seconds_per_pass": float(np.median(wall)),
        "ns_per_row": float(np.median(wall)) / n * 1e9,
        "cpu_ns_per_row": float(np.median(cpu)) / n * 1e9,
        "nll": _nll(model, out, X, y), "load": os.getloadavg()[0],
        **proc_status(("VmHWM", "RssAnon", "RssFile")),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--passes", type=int, default=2, help="online-em passes")
    ap.add_argument("--batch-size", type=int, default=OnlineEM.Params().batch_size)
    ap.add_argument("--dir", default="moe-stream")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    ap.add_argument("--only", help="run one measurement in this process (internal)")
    args = ap.parse_args(argv)
    if args.only:
        print(json.dumps(measure(args.only, args.dir, args.k, args.passes, args.batch_size)))
        return
    os.makedirs(args.dir, exist_ok=True)
    npz, parquet = os.path.join(args.dir, "moe.npz"), os.path.join(args.dir, "moe.parquet")
    fresh = not os.path.exists(npz) or zipfile.ZipFile(npz).getinfo("X.npy").file_size < (
        args.n * args.d * 8)
    if fresh or open_npz_memmap(npz)["X"].shape != (args.n, args.d):
        write_npz(npz, args.n, args.k, args.d, seed=0)
        write_parquet(npz, parquet)
    elif not os.path.exists(parquet):
        write_parquet(npz, parquet)
    print(f"data: {args.n:,} rows, d = {args.d}, k = {args.k}: NPZ "
          f"{os.path.getsize(npz) / 1e9:.2f} GB, Parquet {os.path.getsize(parquet) / 1e9:.2f} GB")
    kinds = ("online-parquet", "online-npz", "online-npz-mmap", "joint-em")
    rows: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for r in range(args.rounds):  # interleaved, so that a change of load hits every kind
        for kind in kinds:
            cmd = [sys.executable, "-m", "measurements.stream_online_em", "--only", kind,
                   "--dir", args.dir, "--k", str(args.k), "--passes", str(args.passes),
                   "--batch-size", str(args.batch_size)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got = json.loads(line.strip().splitlines()[-1])
            rows[kind].append(got)
            print(f"round {r + 1} {kind:16s} {got['iterations']:3d} passes, "
                  f"{got['seconds_per_pass']:6.2f} s/pass, {got['ns_per_row']:5.0f} ns/row "
                  f"(cpu {got['cpu_ns_per_row']:5.0f}), load {got['load']:.1f}, NLL "
                  f"{got['nll']:.7f}, peak RSS {got['VmHWM'] / 2**30:.2f} GiB (anon "
                  f"{got['RssAnon'] / 2**30:.2f}, file {got['RssFile'] / 2**30:.2f})", flush=True)
    med = {kind: {key: float(np.median([g[key] for g in got]))
                  for key in ("ns_per_row", "cpu_ns_per_row", "nll", "VmHWM")}
           for kind, got in rows.items()}
    joint = med["joint-em"]
    print(f"medians over {args.rounds} round(s); joint EM (in memory): {joint['ns_per_row']:.0f} "
          f"ns/row per iteration (cpu {joint['cpu_ns_per_row']:.0f})")
    for kind in kinds[:-1]:
        m = med[kind]
        print(f"{kind}: {m['ns_per_row'] / joint['ns_per_row']:.2f}x joint EM's wall time per "
              f"row and iteration ({m['cpu_ns_per_row'] / joint['cpu_ns_per_row']:.2f}x its CPU "
              f"time); peak RSS {m['VmHWM'] / 2**30:.2f} GiB; NLL "
              f"{(m['nll'] - joint['nll']) / abs(joint['nll']):+.1e} (relative) from joint EM's "
              "maximum likelihood")


if __name__ == "__main__":
    main()
