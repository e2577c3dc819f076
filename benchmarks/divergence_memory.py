# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Peak extra memory and time of the chunked divergences against a naive fp32 autograd implementation, on CPU.

For each divergence type and each implementation, a fresh Python process allocates the inputs (`logits` requiring
grad, `target_logits` not; both fp32 by default), records its resident set size (RSS), runs one forward + backward
while a background thread samples the RSS every millisecond, and reports the peak minus the RSS held just before
(the inputs). The gradient of `logits` is part of that extra memory for both implementations. The measured run uses
a small fixed glibc mmap threshold so that the RSS follows the memory actually held (see `worker`). Times are the
median of `--repeats` further forward + backward runs (the measured run doubles as the warm-up).

Usage:
    python benchmarks/divergence_memory.py             # vocab 50257, seq 512, batch 4 (a few minutes on 2 cores)
    python benchmarks/divergence_memory.py --small     # vocab 32000, seq 128, batch 2
    python benchmarks/divergence_memory.py --chunk-sizes 1024 128 --types reverse_kl jsd
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


ALL_TYPES = ("forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl")
TARGET_RATIO = 0.25
BETA, ALPHA, TEMPERATURE = 0.5, 0.1, 1.0


# --------------------------------------------------------------------------------------------------------------------
# Worker side (runs in a fresh process)
# --------------------------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakSampler:
    """Samples the RSS from a background thread; torch releases the GIL inside its kernels, so sampling continues."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self):
        self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h


def _set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold, and its heap trim threshold to twice that as glibc's dynamic mode does (no-op
    outside glibc). Returns whether it could be set."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * nbytes))
        libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


def naive_divergence(logits, target_logits, loss_type):
    """Straightforward fp32 implementation, as commonly written: full log-softmaxes, mixtures, autograd, token mean.
    The JSD follows TRL's `generalized_jsd_loss`; the skew KLs follow DistiLLM (mixture in probability space)."""
    import torch
    import torch.nn.functional as F

    logp = F.log_softmax(logits.float() / TEMPERATURE, dim=-1)
    logq = F.log_softmax(target_logits.float() / TEMPERATURE, dim=-1)
    if loss_type == "forward_kl":
        per = F.kl_div(logp, logq, reduction="none", log_target=True)  # KL(Q || P)
    elif loss_type == "reverse_kl":
        per = F.kl_div(logq, logp, reduction="none", log_target=True)  # KL(P || Q)
    elif loss_type == "jsd":
        beta = torch.tensor(BETA)
        logm = torch.logsumexp(torch.stack([logp + torch.log1p(-beta), logq + torch.log(beta)]), dim=0)
        per = beta * F.kl_div(logm, logq, reduction="none", log_target=True) + (1 - beta) * F.kl_div(
            logm, logp, reduction="none", log_target=True
        )
    elif loss_type == "skew_forward_kl":
        p, q = logp.exp(), logq.exp()
        per = q * (logq - torch.log(ALPHA * q + (1 - ALPHA) * p))
    elif loss_type == "skew_reverse_kl":
        p, q = logp.exp(), logq.exp()
        per = p * (logp - torch.log(ALPHA * p + (1 - ALPHA) * q))
    else:
        raise ValueError(loss_type)
    per = per.sum(-1)
    return per.sum() / per.numel()


def _chunked_fn(chunk_size):
    def run(logits, target_logits, loss_type):
        from promptkd_trainer.divergences import divergence

        return divergence(
            logits, target_logits, loss_type, beta=BETA, alpha=ALPHA, temperature=TEMPERATURE, chunk_size=chunk_size
        )

    return run


def _import_divergences():
    # Load the module from its file so that the benchmark does not depend on the rest of the package importing.
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "promptkd_trainer" / "divergences.py"
    spec = importlib.util.spec_from_file_location("promptkd_trainer.divergences", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["promptkd_trainer.divergences"] = module
    if "promptkd_trainer" not in sys.modules:
        import types

        package = types.ModuleType("promptkd_trainer")
        package.__path__ = [str(path.parent)]
        sys.modules["promptkd_trainer"] = package
    spec.loader.exec_module(module)


def worker(args) -> dict:
    import torch

    _import_divergences()
    impl, loss_type = args.worker
    fn = naive_divergence if impl == "naive" else _chunked_fn(args.chunk_size)
    dtype = getattr(torch, args.dtype)

    def step(logits, target):
        logits.grad = None
        loss = fn(logits, target, loss_type)
        loss.backward()
        return loss.detach()

    # Warm up kernels and lazy initialisations on a tiny problem so that they do not count as extra memory.
    tiny = torch.randn(2, 3, 64, dtype=dtype, requires_grad=True)
    step(tiny, torch.randn(2, 3, 64, dtype=dtype))
    del tiny

    torch.manual_seed(0)
    shape = (args.batch, args.seq, args.vocab)
    # In place (no temporaries), so the inputs are resident and the RSS before the run is the process's high mark.
    logits = torch.randn(shape).mul_(2.0).to(dtype).requires_grad_()
    target = torch.randn(shape).mul_(2.0).to(dtype)
    gc.collect()
    # During the measured run every allocation above 64 KiB gets its own mapping, returned to the OS on free. With
    # glibc's default dynamic threshold, freed buffers of up to 32 MiB stay in the heap and the RSS would reflect
    # heap fragmentation rather than the memory the computation holds.
    _set_mmap_threshold(64 * 1024)
    base = _rss_bytes()
    ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    with _PeakSampler() as sampler:
        loss = step(logits, target)
    ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # ru_maxrss is a lifetime maximum; it only tells something about this run if it moved during it.
    peak = max(sampler.peak, ru_after if ru_after > ru_before else 0)

    # Timings with glibc's usual steady state (buffers below 32 MiB reused from the heap), not one mmap per buffer.
    _set_mmap_threshold(32 * 2**20)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step(logits, target)
        times.append(time.perf_counter() - t0)

    result = {"peak_extra_mb": (peak - base) / 2**20, "ms": 1000 * statistics.median(times), "loss": loss.item()}
    # Agreement: the naive worker leaves its gradient in the scratch directory (same seed, same inputs), which is
    # cheaper than recomputing the naive loss here.
    ref_path = Path(args.scratch) / f"naive_{loss_type}.pt"
    if impl == "naive":
        torch.save({"loss": loss.item(), "grad": logits.grad}, ref_path)
    elif not ref_path.exists():  # worker run by hand, without its naive counterpart
        result["loss_diff"] = result["grad_diff"] = float("nan")
    else:
        ref = torch.load(ref_path, mmap=True)
        result["loss_diff"] = abs(loss.item() - ref["loss"])
        result["grad_diff"] = (logits.grad.float() - ref["grad"].float()).abs().max().item()
    return result


# --------------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------------


def _run_worker(args, impl, loss_type, chunk_size, scratch) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        impl,
        loss_type,
        "--vocab",
        str(args.vocab),
        "--seq",
        str(args.seq),
        "--batch",
        str(args.batch),
        "--repeats",
        str(args.repeats),
        "--dtype",
        args.dtype,
        "--chunk-size",
        str(chunk_size),
        "--scratch",
        scratch,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--small", action="store_true", help="vocab 32000, seq 128, batch 2")
    parser.add_argument("--types", nargs="+", default=list(ALL_TYPES), choices=ALL_TYPES)
    parser.add_argument(
        "--chunk-sizes",
        type=int,
        nargs="+",
        default=None,
        help="chunk sizes of the chunked implementation, one table each (default: the library default for the "
        "vocabulary, 2**23 // vocab positions)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the measured one (median)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype of both inputs")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "TYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.small:
        args.vocab, args.seq, args.batch = 32000, 128, 2
    if args.chunk_sizes is None:
        from promptkd_trainer.divergences import default_chunk_size

        args.chunk_sizes = [default_chunk_size(args.vocab)]

    if args.worker:
        print(json.dumps(worker(args)))
        return

    import torch

    n = args.batch * args.seq
    grad_mb = n * args.vocab * torch.empty((), dtype=getattr(torch, args.dtype)).element_size() / 2**20
    print(
        f"batch={args.batch} seq={args.seq} vocab={args.vocab} dtype={args.dtype} positions={n} | "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads | one [N, V] gradient = {grad_mb:.0f} MB | "
        f"median of {args.repeats} fwd+bwd after 1 measured run | beta={BETA} alpha={ALPHA} T={TEMPERATURE}"
    )
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="divergence_memory_") as scratch:
        verdicts = _run_all(args, n, scratch)
    print()
    for chunk_size, loss_type, ratio in verdicts:
        met = "met" if ratio <= TARGET_RATIO else "not met"
        print(f"chunk_size={chunk_size} {loss_type}: ratio {ratio:.3f} <= {TARGET_RATIO}: {met}")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")


def _run_all(args, n, scratch):
    naive = {t: _run_worker(args, "naive", t, 0, scratch) for t in args.types}
    verdicts = []
    for chunk_size in args.chunk_sizes:
        print()
        print(f"chunk_size={chunk_size} ({math.ceil(n / chunk_size)} chunk(s) of up to {chunk_size} positions)")
        print()
        print(
            "| type | naive peak MB | chunked peak MB | ratio chunked/naive | naive ms | chunked ms "
            "| max abs diff of loss | max abs diff of grad |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for loss_type in args.types:
            ours = _run_worker(args, "chunked", loss_type, chunk_size, scratch)
            ref = naive[loss_type]
            ratio = ours["peak_extra_mb"] / ref["peak_extra_mb"]
            print(
                f"| {loss_type} | {ref['peak_extra_mb']:.0f} | {ours['peak_extra_mb']:.0f} | {ratio:.3f} "
                f"| {ref['ms']:.0f} | {ours['ms']:.0f} | {ours['loss_diff']:.2e} | {ours['grad_diff']:.2e} |",
                flush=True,
            )
            verdicts.append((chunk_size, loss_type, ratio))
    return verdicts


if __name__ == "__main__":
    main()
