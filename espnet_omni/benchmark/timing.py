"""How the benchmark times and measures: interleaved rounds, medians, peak and activation memory.

Every time is the median of interleaved repetitions (A, B, C, A, B, C, ...), and every ratio
divides two medians of the same run, so slow phases of a shared machine hit all candidates
alike. Calls of a few milliseconds are timed in groups (``calls_per_round``) so that the clock's
and Python's overheads stay small.

Memory is measured two ways: the bytes autograd saves for backward during a forward
(``saved_activation_bytes``), and the peak above the memory in use before a block of code
(``PeakMemory``: CUDA's allocator peak, or on CPU the resident set's high-water mark).

On CPU the timed sections run under fixed glibc allocator thresholds
(``steady_cpu_allocator``), so that every candidate runs under the same, repeatable allocator.
"""

import platform
import statistics
import time
from typing import Callable, Dict, List

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    candidates: Dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    calls: int = 1,
    warmup: int = 1,
) -> Dict[str, List[float]]:
    """Seconds per call of each candidate in each of ``repeats`` rounds; one round runs every
    candidate in turn (A, B, C, A, B, C, ...), ``calls`` calls each, after ``warmup`` calls of
    each."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / calls)
    return times


def calls_per_round(fn: Callable[[], object], device: torch.device, seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds`` (at least 5): a call of a few ms is timed
    in groups, so that the clock's and Python's overheads stay small, and a slower machine
    runs fewer of them."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(3):
        fn()
    synchronize(device)
    return max(5, round(seconds / ((time.perf_counter() - start) / 3)))


def medians(times: Dict[str, List[float]]) -> Dict[str, float]:
    """The median of each candidate's rounds."""
    return {name: statistics.median(values) for name, values in times.items()}


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (how MoE models are trained there); plain fp32 on CPU."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def saved_activation_bytes(module: torch.nn.Module, fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward during ``fn()``, parameters
    (and views of them) and leaf inputs excluded."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        leaf = tensor.requires_grad and tensor.grad_fn is None
        if not leaf and storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def glibc():
    """The C library for its allocator controls (Linux, glibc), or None where there is none."""
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


class PeakMemory:
    """Peak memory of a block of code: CUDA's allocator peak, or on CPU (Linux, glibc) the
    process's resident set high-water mark, reset on entry through /proc/self/clear_refs.

    On CPU, glibc is told to map every block over 64 KiB on its own and freed memory is
    returned to the system before the block, so the resident set follows live tensors.

    Attributes set on exit: ``peak`` (bytes), ``before`` (bytes in use on entry) and
    ``increase_mb`` (the peak above ``before``, MiB).
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cpu":
            self.libc = glibc()
            if self.libc is None:
                raise RuntimeError("peak CPU memory is measured through glibc (Linux only)")
            self.libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            self.libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current RSS
            self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = self._status("VmHWM")
        self.increase_mb = (self.peak - self.before) / 2**20

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/self/status has no {field}")


def steady_cpu_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for the timed sections (Linux, glibc only).

    By default glibc maps large blocks on their own, unmaps them when freed and moves its
    mmap threshold as the process runs, so the time of the same call depends on what was
    allocated before it. With fixed thresholds freed buffers are reused (as jemalloc and
    tcmalloc do, which PyTorch's CPU tuning guide recommends) and every candidate runs under
    the same, repeatable allocator. Returns whether it applied.
    """
    libc = glibc()
    if libc is None:
        return False
    trim = libc.mallopt(-1, 256 * 2**20)  # M_TRIM_THRESHOLD
    mmap = libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD (glibc's maximum)
    return bool(trim and mmap)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else its architecture. Which CPU it is
    matters: the BLAS's small products differ most between vendors (see benchmarks/README.md)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def training_call(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor,
                  device: torch.device, batch_axis: bool = False) -> Callable[[], object]:
    """A fwd+bwd of ``module`` on x (N, d) (with a batch axis added if ``batch_axis``) under
    ``autocast_for(device)``, backward with the output gradient ``grad`` (N, d). Gradients are
    set to None first, as after ``optimizer.zero_grad()``: backward assigns, not accumulates.
    The first element of a tuple output is the one differentiated."""
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        with autocast_for(device):
            out = module(x[None] if batch_axis else x)
        out = out[0] if isinstance(out, tuple) else out
        out.reshape(grad.shape).backward(grad.to(out.dtype))
    return step


def inference_call(module: torch.nn.Module, x: torch.Tensor, device: torch.device,
                   batch_axis: bool = False) -> Callable[[], object]:
    """A call of ``module`` on ``x`` (with a batch axis added if ``batch_axis``) in inference."""
    def run():
        with torch.no_grad(), autocast_for(device):
            return module(x[None] if batch_axis else x)
    return run
