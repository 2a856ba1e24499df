"""GPU memory of training an ASR model with data parallelism.

Per GPU, a data-parallel run (ESPnet's DDP trainer: every GPU holds the whole model, experts
included) needs

* static memory, independent of the batch: float32 master weights, float32 gradients and the
  two float32 moments of Adam(W), 16 bytes per parameter (:func:`static_memory`). bfloat16
  autocast (``use_amp: true``) changes none of it: it casts weights per op inside the forward
  and keeps the float32 parameters, gradients and optimizer states;
* activation memory: the tensors autograd saves for backward, measured on the CPU with the
  real model (:func:`measure_activations`). Autocast does change this: most saved tensors are
  bfloat16, and the bfloat16 copies of the weights that the GEMMs save are a batch-independent
  part of it (``ActivationMemory.fixed``);
* a reserve for what neither counts: the CUDA context, cuBLAS workspaces, the caching
  allocator's fragmentation, DDP's communication buffers and the transient buffers of backward.

From these :func:`max_batch_frames` gives the largest batch, in encoder-input (feature)
frames, that fits one GPU.
"""

import contextlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import yaml

GIB = 2**30

# Adam(W) keeps exp_avg and exp_avg_sq per parameter, in the parameter's dtype.
ADAM_MOMENTS = 2


@dataclass
class StaticMemory:
    """Bytes that do not depend on the batch, per GPU under data parallelism.

    Attributes:
        parameters: distinct parameters (a shared router counted once).
        weights: the parameters themselves (float32 master weights).
        gradients: one gradient per trainable parameter, in its dtype.
        optimizer: Adam's two moments per trainable parameter, in its dtype.
    """

    parameters: int
    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer


def static_memory(model: torch.nn.Module) -> StaticMemory:
    """Weights, gradients and Adam moments of ``model`` (works on the meta device)."""
    params = list(model.parameters())  # distinct: a shared Parameter is listed once
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    return StaticMemory(
        parameters=sum(p.numel() for p in params),
        weights=weights,
        gradients=gradients,
        optimizer=ADAM_MOMENTS * gradients,
    )


def saved_tensor_bytes(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs.

    A storage saved by several ops (or as several views) is counted once; the parameters and
    leaf inputs are left out (they exist whether or not a batch runs). Tensors derived from a
    parameter (autocast's bfloat16 copies of a weight) are counted: they live until backward.
    """
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: Dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        leaf = tensor.requires_grad and tensor.grad_fn is None
        if not leaf and storage.data_ptr() not in weights and storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


ATTENTION_KERNELS = ("math", "fused")


def math_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False):
    """CUDA's math kernel of ``scaled_dot_product_attention``: q, k, v upcast to float32
    (torch's default for 16-bit inputs), softmax(q k^T * scale + mask), dropout with a bool
    mask, times v. It saves the (B, H, T, T) float32 weights before and after dropout and the
    bool mask: 9 bytes per attention weight."""
    if is_causal or enable_gqa:
        raise ValueError("the memory measurement emulates non-causal attention only")
    dtype = q.dtype
    q, k, v = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (q, k, v))
    scale = q.size(-1) ** -0.5 if scale is None else scale
    # The kernel runs below autocast: its products stay in float32.
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        if attn_mask is not None:
            scores = (scores.masked_fill(~attn_mask, float("-inf"))
                      if attn_mask.dtype == torch.bool else scores + attn_mask)
        weights = torch.softmax(scores, dim=-1)
        if dropout_p > 0:
            weights = torch.native_dropout(weights, dropout_p, True)[0]
        return torch.matmul(weights, v).to(dtype)


class CudaKernels(torch.overrides.TorchFunctionMode):
    """Runs dropout and attention with the kernels, and so the saved tensors, of a CUDA GPU.

    * Dropout: CUDA's fused dropout saves a bool mask (1 byte per element); the CPU's
      ``F.dropout`` saves a mask in the input's dtype. Here it runs as ``native_dropout``.
    * Attention (``scaled_dot_product_attention``): ``math`` saves the (B, H, T', T')
      attention weights (see :func:`math_attention`), a term quadratic in the utterance
      length; it reproduces the peaks measured on an H200 at the Libriheavy shape
      (benchmarks/README.md), which a run with attention dropout and a padding mask gave.
      ``fused``: flash / memory-efficient kernels, which save q, k, v, the output and the
      log-sum-exp only and regenerate the dropout mask from the RNG seed; measured with the
      CPU's fused kernel, which saves the same tensors (it runs without dropout only).
    """

    def __init__(self, attention: str):
        super().__init__()
        if attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {ATTENTION_KERNELS}, got '{attention}'")
        self.attention = attention

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.nn.functional.dropout:
            bound = _bind(("input", "p", "training", "inplace"), (0.5, True, False), args, kwargs)
            if bound["training"] and 0 < bound["p"] < 1:
                return torch.native_dropout(bound["input"], bound["p"], True)[0]
        elif func is torch.nn.functional.scaled_dot_product_attention:
            names = ("q", "k", "v", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            aliases = {"query": "q", "key": "k", "value": "v"}
            kwargs = {aliases.get(key, key): value for key, value in kwargs.items()}
            bound = _bind(names, (None, 0.0, False, None, False), args, kwargs)
            if self.attention == "math":
                return math_attention(**bound)
            bound["dropout_p"] = 0.0
            return func(bound.pop("q"), bound.pop("k"), bound.pop("v"), **bound)
        return func(*args, **kwargs)


def _bind(names, defaults, args, kwargs) -> Dict:
    """Positional and keyword arguments by name; the last len(defaults) names are optional."""
    bound = dict(zip(names[len(names) - len(defaults):], defaults))
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


@contextlib.contextmanager
def _gpu_expert_kernels(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Under bfloat16, run the experts left to the default choice with ``grouped_mm``, as
    they run on GPUs of compute capability 9.0+ (the CPU's default in training is ``eager``,
    which saves the weights in float32 rather than their bfloat16 copies)."""
    from espnet_omni.moe import grouped_mm_experts
    from espnet_omni.moe.experts import Experts

    changed = []
    if dtype == torch.bfloat16 and grouped_mm_experts.has_grouped_mm():
        for module in model.modules():
            if isinstance(module, Experts) and module.implementation is None:
                dim, hidden = module.w_1.shape[1:]
                if grouped_mm_experts.aligned(dim, hidden, dtype):
                    module.implementation = "grouped_mm"
                    changed.append(module)
    try:
        yield
    finally:
        for module in changed:
            module.implementation = None


@dataclass
class ActivationMemory:
    """Bytes autograd saves for backward in one training forward: ``fixed + per_frame * F``
    for a batch of F encoder-input (feature) frames.

    Attributes:
        dtype: float32, or bfloat16 for a forward under bfloat16 autocast.
        attention: the attention kernel measured ("math" or "fused").
        utterance_frames: encoder-input frames per utterance of the measured batches.
        fixed: bytes that do not grow with the batch (under autocast: the bfloat16 copies of
            the weights that the GEMMs save).
        per_frame: bytes per encoder-input frame.
        measured: {frames: saved bytes} of the forwards the two figures come from.
    """

    dtype: torch.dtype
    attention: str
    utterance_frames: int
    fixed: float
    per_frame: float
    measured: Dict[int, int] = field(default_factory=dict)

    def bytes_for(self, frames: int) -> float:
        return self.fixed + self.per_frame * frames

    @property
    def per_1000_frames(self) -> float:
        return 1000 * self.per_frame


def frame_shift(model: torch.nn.Module) -> int:
    """Samples per encoder-input frame: the frontend's hop length."""
    hop = getattr(getattr(model, "frontend", None), "hop_length", None)
    if hop is None:
        raise ValueError(
            f"the model's frontend ({type(getattr(model, 'frontend', None)).__name__}) has no "
            f"hop_length: the activation measurement feeds raw waveforms to a frontend"
        )
    return hop


def training_forward(
    model: torch.nn.Module, utterances: int, utterance_frames: int, vocab_size: int
) -> Callable[[], Dict[str, int]]:
    """One training forward of ``model`` (an ESPnetASRModel) on ``utterances`` random
    waveforms that the frontend turns into ``utterance_frames`` frames each, with random
    targets of one token per 30 frames (3.3 tokens/s at a 10 ms shift).

    Returns:
        a function that runs the forward and returns the encoder's input and output frames,
        {"input": B * T, "output": B * T'}, and the loss (whose graph holds the saved
        tensors until it is dropped).
    """
    hop = frame_shift(model)
    # A centred STFT gives samples // hop + 1 frames.
    samples = (utterance_frames - 1) * hop
    speech = torch.randn(utterances, samples)
    speech_lengths = torch.full((utterances,), samples, dtype=torch.long)
    tokens = max(1, utterance_frames // 30)
    text = torch.randint(1, vocab_size - 1, (utterances, tokens))
    text_lengths = torch.full((utterances,), tokens, dtype=torch.long)
    seen = {}

    def hook(module, args, output):
        seen["input"] = int(args[1].sum())
        seen["output"] = int(output[1].sum())

    def forward() -> Tuple[Dict[str, int], torch.Tensor]:
        handle = model.encoder.register_forward_hook(hook)
        try:
            loss = model(speech, speech_lengths, text, text_lengths)[0]
        finally:
            handle.remove()
        return dict(seen), loss

    return forward


def measure_activations(
    model: torch.nn.Module,
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    utterance_frames: int = 1000,
    utterances: Sequence[int] = (1, 2),
    attention: str = "math",
) -> ActivationMemory:
    """Measure the bytes saved for backward by training forwards of ``model`` (on the CPU)
    on batches of ``utterances`` utterances of ``utterance_frames`` frames each, and fit
    ``fixed + per_frame * frames`` through the smallest and largest batch.

    Args:
        model: an ESPnetASRModel on the CPU (as ``ASRTask.build_model`` builds it).
        vocab_size: output units of its CTC layer.
        dtype: float32, or bfloat16 for a forward under CPU bfloat16 autocast (what
            ``use_amp: true`` gives on GPUs that support bfloat16).
        utterance_frames: encoder-input frames per utterance (1000: 10 s at a 10 ms shift).
        utterances: batch sizes to measure, at least two different ones.
        attention: the CUDA attention kernel whose saved tensors are measured, "math" or
            "fused" (see :class:`CudaKernels`). With "math" the per-frame figure holds for
            utterances of ``utterance_frames``: longer ones cost more per frame.
    """
    if len(set(utterances)) < 2:
        raise ValueError(f"measure at least two batch sizes, got {list(utterances)}")
    was_training = model.training
    model.train()
    measured: Dict[int, int] = {}
    generator_state = torch.get_rng_state()
    try:
        for count in sorted(set(utterances)):
            torch.manual_seed(0)
            forward = training_forward(model, count, utterance_frames, vocab_size)
            frames = {}

            def run():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    frames.update(forward()[0])

            with CudaKernels(attention), _gpu_expert_kernels(model, dtype):
                saved = saved_tensor_bytes(model, run)
            measured[frames["input"]] = saved
    finally:
        torch.set_rng_state(generator_state)
        model.train(was_training)
    small, large = min(measured), max(measured)
    per_frame = (measured[large] - measured[small]) / (large - small)
    fixed = max(0.0, measured[small] - per_frame * small)
    return ActivationMemory(dtype=dtype, attention=attention, utterance_frames=utterance_frames,
                            fixed=fixed, per_frame=per_frame, measured=measured)


def max_batch_frames(
    static: StaticMemory, activations: ActivationMemory, gpu_bytes: float, reserve_bytes: float
) -> int:
    """Largest batch (encoder-input frames) whose training step fits ``gpu_bytes`` with
    ``reserve_bytes`` held back; 0 where the static memory alone does not fit."""
    free = gpu_bytes - reserve_bytes - static.total - activations.fixed
    if free <= 0:
        return 0
    return int(free // activations.per_frame)


@dataclass
class TrainingSettings:
    """What a training YAML says about precision, batching and the frame rate.

    Attributes:
        use_amp: ``use_amp`` (autocast; bfloat16 on GPUs that support it).
        sample_rate: the frontend's ``fs`` (default 16 kHz).
        batch_type: ESPnet's ``batch_type``.
        batch_bins: ``batch_bins`` (numel, length: about samples of speech per batch).
        batch_size: ``batch_size`` (unsorted, sorted, folded).
    """

    use_amp: bool
    sample_rate: int
    batch_type: str
    batch_bins: Optional[int]
    batch_size: Optional[int]


def training_settings(config: Path) -> TrainingSettings:
    """Read the training settings of an ESPnet ASR YAML (ESPnet's defaults where absent)."""
    conf = yaml.safe_load(Path(config).read_text()) or {}
    fs = (conf.get("frontend_conf") or {}).get("fs", 16000)
    if isinstance(fs, str):
        import humanfriendly

        fs = humanfriendly.parse_size(fs)
    return TrainingSettings(
        use_amp=bool(conf.get("use_amp", False)),
        sample_rate=int(fs),
        batch_type=conf.get("batch_type", "folded"),
        batch_bins=conf.get("batch_bins", 1000000),
        batch_size=conf.get("batch_size", 20),
    )


def config_batch_frames(
    settings: TrainingSettings, hop: int, num_gpus: int, utterance_frames: int
) -> int:
    """Encoder-input frames of one GPU's share of the config's batch: ESPnet splits each
    batch over the GPUs. numel / length: batch_bins counts about one bin per speech sample;
    other batch types: batch_size utterances of ``utterance_frames``."""
    if settings.batch_type in ("numel", "length"):
        return math.ceil(settings.batch_bins / hop / num_gpus)
    return math.ceil(settings.batch_size / num_gpus) * utterance_frames


@dataclass
class ConfigMemory:
    """The memory figures of one training config.

    Attributes:
        config: the YAML.
        counts: ``parameter_counts`` of the built model (total, active, ...).
        static: weights, gradients, Adam moments.
        activations: {dtype: ActivationMemory}; bfloat16 present where CPU autocast ran.
        training_dtype: the dtype the config trains in (bfloat16 with use_amp).
        seconds_per_frame: encoder-input frame shift in seconds.
        settings: the YAML's training settings.
        num_experts: experts per MoE block (None for a dense encoder).
        extrapolated: whether the activations were extrapolated, not measured.
    """

    config: Path
    counts: Dict[str, int]
    static: StaticMemory
    activations: Dict[torch.dtype, ActivationMemory]
    training_dtype: torch.dtype
    seconds_per_frame: float
    settings: TrainingSettings
    num_experts: Optional[int] = None
    extrapolated: bool = False

    @property
    def training_activations(self) -> ActivationMemory:
        return self.activations[self.training_dtype]


@contextlib.contextmanager
def config_with_experts(config: Path, num_experts: Optional[int]) -> Iterator[Path]:
    """``config`` itself, or a temporary copy whose ``encoder_conf.num_experts`` is
    ``num_experts`` (None: the config as it is)."""
    if num_experts is None:
        yield Path(config)
        return
    conf = yaml.safe_load(Path(config).read_text()) or {}
    if "num_experts" not in (conf.get("encoder_conf") or {}):
        raise ValueError(f"{config}: its encoder_conf has no num_experts to change")
    conf["encoder_conf"]["num_experts"] = num_experts
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / Path(config).name
        copy.write_text(yaml.safe_dump(conf, sort_keys=False))
        yield copy


def extrapolate_activations(
    variants: Dict[int, ActivationMemory], parameters: Dict[int, int], num_experts: int,
    target_parameters: int,
) -> ActivationMemory:
    """The activations of a model with ``num_experts`` experts per MoE block, from the same
    model measured with other expert counts.

    Both figures are linear in E: a token passes through top-k experts whatever E is, so the
    bytes per frame grow only by the router's (frames, E) logits and probabilities, and under
    bfloat16 autocast the fixed bytes are the bfloat16 copies of the weights that the GEMMs
    save, 2 bytes per parameter. With two or more variants the line through the two largest is
    used; with one, the same bytes per frame and 2 bytes per added parameter (bfloat16).

    Args:
        variants: {E: ActivationMemory} measured, all of one dtype.
        parameters: {E: parameters} of the measured variants.
        num_experts: the E wanted.
        target_parameters: the parameters of the model with ``num_experts``.
    """
    counts = sorted(variants)
    largest = variants[counts[-1]]
    if len(counts) >= 2:
        smaller = variants[counts[-2]]
        step = (num_experts - counts[-1]) / (counts[-1] - counts[-2])
        fixed = largest.fixed + step * (largest.fixed - smaller.fixed)
        per_frame = largest.per_frame + step * (largest.per_frame - smaller.per_frame)
    else:
        copy_bytes = 2 if largest.dtype == torch.bfloat16 else 0
        fixed = largest.fixed + copy_bytes * (target_parameters - parameters[counts[-1]])
        per_frame = largest.per_frame
    return ActivationMemory(
        dtype=largest.dtype,
        attention=largest.attention,
        utterance_frames=largest.utterance_frames,
        fixed=fixed,
        per_frame=per_frame,
        measured={},
    )


def config_memory(
    config: Path,
    vocab_size: int,
    utterance_seconds: float = 15.0,
    attention: str = "math",
    num_experts: Optional[int] = None,
    measured_from: Sequence["ConfigMemory"] = (),
) -> ConfigMemory:
    """Build ``config``'s model as ESPnet's training does (on the CPU) and measure it.

    The activations are measured (see :func:`measure_activations`) in float32 and, where
    CPU bfloat16 autocast runs the model, in bfloat16; a config with ``use_amp: true`` is
    sized by its bfloat16 figure. The measured batches hold utterances of
    ``utterance_seconds`` at the config's frame shift.

    Args:
        num_experts: build the config with this many experts per MoE block instead.
        measured_from: the same config measured with other expert counts: the model is then
            built on the meta device only (no memory) and its activations extrapolated from
            these (:func:`extrapolate_activations`), for models too large for the CPU.
    """
    from espnet_omni.analysis.params import parameter_counts
    from espnet_omni.configs import build_model_from_config

    settings = training_settings(config)
    torch.manual_seed(0)
    with config_with_experts(config, num_experts) as built:
        experts = (yaml.safe_load(built.read_text()).get("encoder_conf") or {}).get(
            "num_experts")
        device = "meta" if measured_from else "cpu"
        model = build_model_from_config(built, vocab_size, device=device)
    counts = parameter_counts(model)
    static = static_memory(model)
    seconds_per_frame = frame_shift(model) / settings.sample_rate
    training_dtype = torch.bfloat16 if settings.use_amp else torch.float32
    if measured_from:
        if experts is None or any(m.num_experts is None for m in measured_from):
            raise ValueError(f"{config}: extrapolating needs num_experts in encoder_conf")
        parameters = {m.num_experts: m.static.parameters for m in measured_from}
        dtypes = set.intersection(*(set(m.activations) for m in measured_from))
        return ConfigMemory(
            config=Path(config),
            counts=counts,
            static=static,
            activations={
                dtype: extrapolate_activations(
                    {m.num_experts: m.activations[dtype] for m in measured_from},
                    parameters, experts, static.parameters,
                )
                for dtype in dtypes
            },
            training_dtype=measured_from[-1].training_dtype,
            seconds_per_frame=seconds_per_frame,
            settings=settings,
            num_experts=experts,
            extrapolated=True,
        )
    utterance_frames = max(2, round(utterance_seconds / seconds_per_frame))
    activations = {
        torch.float32: measure_activations(
            model, vocab_size, torch.float32, utterance_frames, attention=attention
        )
    }
    try:
        activations[torch.bfloat16] = measure_activations(
            model, vocab_size, torch.bfloat16, utterance_frames, attention=attention
        )
    except RuntimeError:  # an op without a CPU bfloat16 kernel: float32 figures only
        pass
    if training_dtype not in activations:
        training_dtype = torch.float32
    return ConfigMemory(
        config=Path(config),
        counts=counts,
        static=static,
        activations=activations,
        training_dtype=training_dtype,
        seconds_per_frame=seconds_per_frame,
        settings=settings,
        num_experts=experts,
    )
