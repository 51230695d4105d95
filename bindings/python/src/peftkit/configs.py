"""Configuration dataclasses and enumerations, and their translation to the C structs.

Enumerations are :class:`enum.IntEnum` s whose values are the header's constants. Wherever a config
takes one, a case-insensitive name (``"llama"``, ``"swish"``, ``"cosine"``) is accepted too.

Adapter methods are registered in :data:`ADAPTER_METHODS` (method name -> config class). A method the
header adds later gets a config class with ``method`` set and a ``_to_struct`` method, plus one line
there.
"""

from __future__ import annotations

import ctypes
import enum
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar, Union

import numpy as np

from . import _capi
from .errors import InvalidArgumentError

# --------------------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------------------


class Architecture(enum.IntEnum):
    """Model architecture (``PEFTKIT_ARCH_*``)."""

    GPT2 = _capi.PEFTKIT_ARCH_GPT2
    LLAMA = _capi.PEFTKIT_ARCH_LLAMA


class Method(enum.IntEnum):
    """Adapter method (``PEFTKIT_METHOD_*``)."""

    BOTTLENECK = _capi.PEFTKIT_METHOD_BOTTLENECK
    LORA = _capi.PEFTKIT_METHOD_LORA
    IA3 = _capi.PEFTKIT_METHOD_IA3
    PREFIX = _capi.PEFTKIT_METHOD_PREFIX
    PROMPT = _capi.PEFTKIT_METHOD_PROMPT


class Preset(enum.IntEnum):
    """Where a bottleneck adapter sits (``PEFTKIT_PRESET_*``).

    HOULSBY: after attention and after the feed-forward block (AdapterHub ``double_seq_bn``).
    PFEIFFER: after the feed-forward block only (AdapterHub ``seq_bn``).
    """

    HOULSBY = _capi.PEFTKIT_PRESET_HOULSBY
    PFEIFFER = _capi.PEFTKIT_PRESET_PFEIFFER


class Activation(enum.IntEnum):
    """Adapter non-linearity (``PEFTKIT_ACTIVATION_*``); GELU is the exact (erf) form."""

    DEFAULT = _capi.PEFTKIT_ACTIVATION_DEFAULT
    RELU = _capi.PEFTKIT_ACTIVATION_RELU
    GELU = _capi.PEFTKIT_ACTIVATION_GELU
    GELU_TANH = _capi.PEFTKIT_ACTIVATION_GELU_TANH
    SWISH = _capi.PEFTKIT_ACTIVATION_SWISH


class AdapterInit(enum.IntEnum):
    """Adapter weight initialisation (``PEFTKIT_INIT_*``)."""

    BERT = _capi.PEFTKIT_INIT_BERT
    HOULSBY = _capi.PEFTKIT_INIT_HOULSBY
    ZERO_UP = _capi.PEFTKIT_INIT_ZERO_UP


class Schedule(enum.IntEnum):
    """Learning-rate schedule (``PEFTKIT_SCHEDULE_*``), each after ``warmup_steps`` of linear warm-up."""

    CONSTANT = _capi.PEFTKIT_SCHEDULE_CONSTANT
    LINEAR = _capi.PEFTKIT_SCHEDULE_LINEAR
    COSINE = _capi.PEFTKIT_SCHEDULE_COSINE


E = TypeVar("E", bound=enum.IntEnum)


def _enum(cls: type[E], value: Any, what: str) -> E:
    """An enum member from a member, its int value, or its case-insensitive name."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        key = value.strip().upper().replace("-", "_")
        if key in cls.__members__:
            return cls.__members__[key]
    elif not isinstance(value, (bool, float)):
        try:
            return cls(operator.index(value))
        except (TypeError, ValueError):
            pass
    names = ", ".join(repr(n.lower()) for n in cls.__members__)
    raise InvalidArgumentError(f"{what} must be one of {names} (or {cls.__name__}.*), got {value!r}")


# --------------------------------------------------------------------------------------------------
# Checked conversions to C field types (ctypes itself silently truncates out-of-range integers)
# --------------------------------------------------------------------------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT64_MAX = 2**64 - 1


def _int(value: Any, what: str, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    if isinstance(value, bool) or isinstance(value, (float, np.floating)):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise InvalidArgumentError(f"{what} = {v} is out of range [{lo}, {hi}]")
    return v


def _float(value: Any, what: str) -> float:
    if isinstance(value, (str, bytes, bool)):
        raise InvalidArgumentError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be a number, got {value!r}") from None


def _shortest(value: float) -> float:
    """A float32 setting read back from C, as the shortest decimal that names the same float32 (1e-05
    rather than 9.999999747378752e-06)."""
    return float(str(np.float32(value)))


def _bool(value: Any, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or value in (0, 1):
        return 1 if value else 0
    raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")


def _tri(value: Any, what: str) -> int:
    """None -> -1 (the architecture's default), else 0/1."""
    return -1 if value is None else _bool(value, what)


def _derived(value: Any | None, what: str) -> int:
    """None -> 0 (derived from other fields), else a positive int32."""
    return 0 if value is None else _int(value, what, 1)


def int32_array(values: int | Iterable[int] | None, what: str) -> np.ndarray | None:
    """A C-contiguous int32 copy of an int or an iterable of ints (None stays None)."""
    if values is None:
        return None
    items: Iterable[Any] = [values] if isinstance(values, (int, np.integer)) else values
    return np.array([_int(v, f"{what}[{i}]") for i, v in enumerate(items)], dtype=np.int32)


def _pointer(arr: np.ndarray | None) -> Any:
    if arr is None or arr.size == 0:
        return None
    return arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


T = TypeVar("T")


def _make(cls: type[T], config: T | Mapping[str, Any] | None, options: Mapping[str, Any]) -> T:
    """`cls` from an instance, a mapping of field values or None, with `options` overriding fields."""
    if config is None:
        return cls(**options)
    if isinstance(config, cls):
        if not options:
            return config
        values = {f.name: getattr(config, f.name) for f in fields(config)}  # type: ignore[arg-type]
        values.update(options)
        return cls(**values)
    if isinstance(config, Mapping):
        return cls(**{**config, **options})
    raise TypeError(f"expected a {cls.__name__}, a mapping or None, got {type(config).__name__}")


# --------------------------------------------------------------------------------------------------
# Model config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a decoder; field meanings follow Hugging Face ``config.json``.

    The defaults describe a tiny GPT-2 (vocab 256, hidden 64, 2 layers, 4 heads) that trains a step in
    milliseconds. ``None`` means "derived": ``num_kv_heads`` = ``num_heads``, ``head_dim`` =
    ``hidden_size / num_heads``, ``intermediate_size`` = 4 x ``hidden_size``, ``norm_eps`` = 1e-5
    (GPT-2) or 1e-6 (Llama), and the three bias flags take the architecture's default (GPT-2 on, Llama
    off). :attr:`Model.config` always reports concrete values.
    """

    architecture: Architecture = Architecture.GPT2
    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    intermediate_size: int | None = None
    max_positions: int = 1024
    norm_eps: float | None = None
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    qkv_bias: bool | None = None
    output_bias: bool | None = None
    mlp_bias: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "architecture", _enum(Architecture, self.architecture, "architecture"))

    def _to_struct(self) -> _capi.ModelConfigStruct:
        s = _capi.new_struct(_capi.ModelConfigStruct)
        s.architecture = int(self.architecture)
        s.vocab_size = _int(self.vocab_size, "vocab_size")
        s.hidden_size = _int(self.hidden_size, "hidden_size")
        s.num_layers = _int(self.num_layers, "num_layers")
        s.num_heads = _int(self.num_heads, "num_heads")
        s.num_kv_heads = _derived(self.num_kv_heads, "num_kv_heads")
        s.head_dim = _derived(self.head_dim, "head_dim")
        s.intermediate_size = _derived(self.intermediate_size, "intermediate_size")
        s.max_positions = _int(self.max_positions, "max_positions")
        s.norm_eps = 0.0 if self.norm_eps is None else _float(self.norm_eps, "norm_eps")
        s.rope_theta = _float(self.rope_theta, "rope_theta")
        s.tie_word_embeddings = _bool(self.tie_word_embeddings, "tie_word_embeddings")
        s.qkv_bias = _tri(self.qkv_bias, "qkv_bias")
        s.output_bias = _tri(self.output_bias, "output_bias")
        s.mlp_bias = _tri(self.mlp_bias, "mlp_bias")
        return s

    @classmethod
    def _from_struct(cls, s: _capi.ModelConfigStruct) -> ModelConfig:
        return cls(
            architecture=Architecture(s.architecture),
            vocab_size=s.vocab_size,
            hidden_size=s.hidden_size,
            num_layers=s.num_layers,
            num_heads=s.num_heads,
            num_kv_heads=s.num_kv_heads,
            head_dim=s.head_dim,
            intermediate_size=s.intermediate_size,
            max_positions=s.max_positions,
            norm_eps=_shortest(s.norm_eps),
            rope_theta=_shortest(s.rope_theta),
            tie_word_embeddings=bool(s.tie_word_embeddings),
            qkv_bias=bool(s.qkv_bias),
            output_bias=bool(s.output_bias),
            mlp_bias=bool(s.mlp_bias),
        )


# --------------------------------------------------------------------------------------------------
# Adapter configs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BottleneckConfig:
    """A bottleneck adapter, ``x + up(act(down(x))) * scaling``, saved in AdapterHub's format.

    Attributes:
        preset: ``"pfeiffer"`` (after the feed-forward block; AdapterHub ``seq_bn``) or ``"houlsby"``
            (after attention and after the feed-forward block; ``double_seq_bn``).
        reduction_factor: bottleneck width = hidden_size / reduction_factor (at least 1).
        bottleneck_size: an explicit width instead; None uses ``reduction_factor``.
        non_linearity: ``"relu"``, ``"gelu"`` (exact), ``"gelu_tanh"``, ``"swish"``, or None for the
            preset's default (swish for houlsby, relu for pfeiffer).
        init_weights: ``"bert"`` (N(0, 0.02)), ``"houlsby"`` (near-identity) or ``"zero_up"``
            (exactly the identity at start).
        scaling: multiplies the up-projection output.
        ln_before, ln_after: a trainable LayerNorm on the adapter input / output.
        layers: indices of the layers that get the adapter; None means every layer.
        seed: seed of the initial weights.
    """

    method: ClassVar[str] = "bottleneck"

    preset: Preset = Preset.PFEIFFER
    reduction_factor: float = 16.0
    bottleneck_size: int | None = None
    non_linearity: Activation | None = None
    init_weights: AdapterInit = AdapterInit.BERT
    scaling: float = 1.0
    ln_before: bool = False
    ln_after: bool = False
    layers: tuple[int, ...] | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", _enum(Preset, self.preset, "preset"))
        if self.non_linearity is not None:
            act = _enum(Activation, self.non_linearity, "non_linearity")
            object.__setattr__(self, "non_linearity", None if act == Activation.DEFAULT else act)
        object.__setattr__(self, "init_weights", _enum(AdapterInit, self.init_weights, "init_weights"))
        if self.layers is not None:
            layers = int32_array(self.layers, "layers")
            object.__setattr__(self, "layers", tuple(int(v) for v in layers))  # type: ignore[union-attr]

    def _to_struct(self) -> tuple[_capi.AdapterConfigStruct, np.ndarray | None]:
        """The C struct, and an object that must stay alive while the struct is in use."""
        s = _capi.new_struct(_capi.AdapterConfigStruct)
        s.method = int(Method.BOTTLENECK)
        s.preset = int(self.preset)
        s.reduction_factor = _float(self.reduction_factor, "reduction_factor")
        s.bottleneck_size = 0 if self.bottleneck_size is None else _int(self.bottleneck_size, "bottleneck_size")
        s.non_linearity = int(Activation.DEFAULT if self.non_linearity is None else self.non_linearity)
        s.init_weights = int(self.init_weights)
        s.scaling = _float(self.scaling, "scaling")
        s.ln_before = _bool(self.ln_before, "ln_before")
        s.ln_after = _bool(self.ln_after, "ln_after")
        layers = int32_array(self.layers, "layers")
        s.layers = _pointer(layers)
        s.n_layers = 0 if layers is None else len(layers)
        s.seed = _int(self.seed, "seed", 0, UINT64_MAX)
        return s, layers


def _names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    """Module names from a comma-separated string or an iterable of strings (None / empty = default)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = []
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise InvalidArgumentError(f"{what}[{i}] must be a string, got {v!r}")
        v = v.strip()
        if not v or "," in v or "\0" in v:
            raise InvalidArgumentError(f"{what}[{i}] = {v!r} is not a module name")
        out.append(v)
    return tuple(out) or None


def _names_bytes(names: tuple[str, ...] | None) -> bytes | None:
    return None if names is None else ",".join(names).encode()


def _layers(cfg: Any) -> None:
    if cfg.layers is not None:
        layers = int32_array(cfg.layers, "layers")
        object.__setattr__(cfg, "layers", tuple(int(v) for v in layers))  # type: ignore[union-attr]


def _set_layers(s: _capi.AdapterConfigStruct, layers_field: tuple[int, ...] | None) -> np.ndarray | None:
    layers = int32_array(layers_field, "layers")
    s.layers = _pointer(layers)
    s.n_layers = 0 if layers is None else len(layers)
    return layers


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA, ``y = W x + (alpha / r) B A x`` on chosen frozen linears (rsLoRA: ``alpha / sqrt(r)``),
    saved in Hugging Face PEFT's format.

    Attributes:
        rank: r.
        alpha: the scaling numerator.
        dropout: dropout on the LoRA branch's input while training, in [0, 1).
        use_rslora: scale by ``alpha / sqrt(r)``.
        target_modules: module names as PEFT's ``target_modules`` (a list or a comma-separated
            string): GPT-2 ``c_attn``, ``attn.c_proj``, ``c_fc``, ``mlp.c_proj`` (``c_proj`` = both);
            Llama ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``,
            ``down_proj``. None = PEFT's default (GPT-2 ``c_attn``; Llama ``q_proj, v_proj``).
        layers: indices of the adapted layers; None means every layer.
        seed: seed of A's initialisation (B starts at zero).
    """

    method: ClassVar[str] = "lora"

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    use_rslora: bool = False
    target_modules: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _names(self.target_modules, "target_modules"))
        _layers(self)

    def _to_struct(self) -> tuple[_capi.AdapterConfigStruct, Any]:
        s = _capi.new_struct(_capi.AdapterConfigStruct)
        s.method = int(Method.LORA)
        s.lora_rank = _int(self.rank, "rank")
        s.lora_alpha = _float(self.alpha, "alpha")
        s.lora_dropout = _float(self.dropout, "dropout")
        s.use_rslora = _bool(self.use_rslora, "use_rslora")
        targets = _names_bytes(self.target_modules)
        s.target_modules = targets
        layers = _set_layers(s, self.layers)
        s.seed = _int(self.seed, "seed", 0, UINT64_MAX)
        return s, (targets, layers)


@dataclass(frozen=True)
class IA3Config:
    """IA3: learned vectors (starting at 1) that scale the outputs of chosen linears, or the inputs of
    feed-forward ones; saved in Hugging Face PEFT's format.

    Attributes:
        target_modules: as :class:`LoRAConfig`; None = PEFT's default (GPT-2 ``c_attn, mlp.c_proj``;
            Llama ``k_proj, v_proj, down_proj``).
        feedforward_modules: the targets scaled on their input; None = PEFT's default (GPT-2
            ``mlp.c_proj``; Llama ``down_proj``).
        layers: indices of the adapted layers; None means every layer.
    """

    method: ClassVar[str] = "ia3"

    target_modules: tuple[str, ...] | None = None
    feedforward_modules: tuple[str, ...] | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _names(self.target_modules, "target_modules"))
        object.__setattr__(self, "feedforward_modules", _names(self.feedforward_modules, "feedforward_modules"))
        _layers(self)

    def _to_struct(self) -> tuple[_capi.AdapterConfigStruct, Any]:
        s = _capi.new_struct(_capi.AdapterConfigStruct)
        s.method = int(Method.IA3)
        targets = _names_bytes(self.target_modules)
        ff = _names_bytes(self.feedforward_modules)
        s.target_modules = targets
        s.feedforward_modules = ff
        layers = _set_layers(s, self.layers)
        return s, (targets, ff, layers)


@dataclass(frozen=True)
class PrefixConfig:
    """Prefix tuning: trainable keys and values every attention layer sees before the sequence; saved
    in Hugging Face PEFT's format.

    Attributes:
        num_virtual_tokens: prefix length.
        prefix_projection: train the prefix through an MLP (embedding -> Linear -> tanh -> Linear), as
            PEFT's ``prefix_projection``; the saved file holds the MLP's output rows, as PEFT's does.
        projection_hidden: that MLP's width; None = the key/value width (PEFT's default).
        seed: seed of the initial weights.
    """

    method: ClassVar[str] = "prefix"

    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    projection_hidden: int | None = None
    seed: int = 42

    def _to_struct(self) -> tuple[_capi.AdapterConfigStruct, Any]:
        s = _capi.new_struct(_capi.AdapterConfigStruct)
        s.method = int(Method.PREFIX)
        s.num_virtual_tokens = _int(self.num_virtual_tokens, "num_virtual_tokens")
        s.prefix_projection = _bool(self.prefix_projection, "prefix_projection")
        s.projection_hidden = 0 if self.projection_hidden is None else _int(self.projection_hidden, "projection_hidden", 1)
        s.seed = _int(self.seed, "seed", 0, UINT64_MAX)
        return s, None


@dataclass(frozen=True)
class PromptConfig:
    """Prompt tuning: trainable virtual-token embeddings prepended to the input; saved in Hugging Face
    PEFT's format.

    Attributes:
        num_virtual_tokens: number of virtual tokens.
        init_tokens: start from these tokens' embeddings, cycled (PEFT's TEXT init with the ids of a
            tokenized text); None = random N(0, 1) (PEFT's RANDOM init).
        seed: seed of the random init.
    """

    method: ClassVar[str] = "prompt"

    num_virtual_tokens: int = 20
    init_tokens: tuple[int, ...] | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.init_tokens is not None:
            toks = int32_array(self.init_tokens, "init_tokens")
            object.__setattr__(self, "init_tokens", tuple(int(v) for v in toks))  # type: ignore[union-attr]

    def _to_struct(self) -> tuple[_capi.AdapterConfigStruct, Any]:
        s = _capi.new_struct(_capi.AdapterConfigStruct)
        s.method = int(Method.PROMPT)
        s.num_virtual_tokens = _int(self.num_virtual_tokens, "num_virtual_tokens")
        toks = int32_array(self.init_tokens, "init_tokens")
        s.init_tokens = _pointer(toks)
        s.n_init_tokens = 0 if toks is None else len(toks)
        s.seed = _int(self.seed, "seed", 0, UINT64_MAX)
        return s, toks


#: Adapter method name -> config class; ``Model.attach_adapter(name, method=...)`` looks methods up here.
ADAPTER_METHODS: dict[str, type[Any]] = {
    cls.method: cls for cls in (BottleneckConfig, LoRAConfig, IA3Config, PrefixConfig, PromptConfig)
}

AdapterConfig = Union[BottleneckConfig, LoRAConfig, IA3Config, PrefixConfig, PromptConfig]


def adapter_config(config: Any, method: str | None, options: Mapping[str, Any]) -> Any:
    """The adapter config for ``attach_adapter``: `config` (an instance of a registered class or a
    mapping), or the class registered for `method` built from `options`."""
    if config is not None and not isinstance(config, Mapping):
        if type(config) not in ADAPTER_METHODS.values():
            raise TypeError(f"config must be one of {', '.join(c.__name__ for c in ADAPTER_METHODS.values())} "
                            f"or a mapping, got {type(config).__name__}")
        if method is not None and method != config.method:
            raise InvalidArgumentError(f"method {method!r} does not match a {type(config).__name__}")
        return _make(type(config), config, options)
    name = "bottleneck" if method is None else str(method).lower()
    cls = ADAPTER_METHODS.get(name)
    if cls is None:
        raise InvalidArgumentError(f"unknown adapter method {method!r}; known: {', '.join(sorted(ADAPTER_METHODS))}")
    return _make(cls, config, options)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings of :meth:`Model.train_step`: PyTorch's AdamW with decoupled weight decay.

    Attributes:
        learning_rate: peak learning rate.
        beta1, beta2, eps, weight_decay: AdamW's (PyTorch ``betas=(beta1, beta2)``).
        schedule: ``"constant"``, ``"linear"`` (to 0 at ``total_steps``) or ``"cosine"``.
        warmup_steps: linear warm-up from 0 over this many steps.
        total_steps: length of the linear/cosine schedule.
        max_grad_norm: clip the global gradient L2 norm to this; 0 = no clipping.
        micro_batch_size: rows per micro-batch (gradient accumulation, same gradient, less memory);
            0 = the whole batch at once.
    """

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    schedule: Schedule = Schedule.CONSTANT
    warmup_steps: int = 0
    total_steps: int = 0
    max_grad_norm: float = 0.0
    micro_batch_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", _enum(Schedule, self.schedule, "schedule"))

    def _to_struct(self) -> _capi.TrainConfigStruct:
        s = _capi.new_struct(_capi.TrainConfigStruct)
        s.learning_rate = _float(self.learning_rate, "learning_rate")
        s.beta1 = _float(self.beta1, "beta1")
        s.beta2 = _float(self.beta2, "beta2")
        s.eps = _float(self.eps, "eps")
        s.weight_decay = _float(self.weight_decay, "weight_decay")
        s.schedule = int(self.schedule)
        s.warmup_steps = _int(self.warmup_steps, "warmup_steps")
        s.total_steps = _int(self.total_steps, "total_steps")
        s.max_grad_norm = _float(self.max_grad_norm, "max_grad_norm")
        s.micro_batch_size = _int(self.micro_batch_size, "micro_batch_size")
        return s


@dataclass(frozen=True)
class TrainResult:
    """What one optimiser step did (``peftkit_train_result``).

    Attributes:
        loss: mean cross-entropy over the counted tokens, before the update.
        grad_norm: global gradient L2 norm, before clipping.
        learning_rate: the learning rate used for this step.
        step: optimiser steps taken by this adapter so far, including this one.
        tokens: label positions that counted towards the loss.
    """

    loss: float
    grad_norm: float
    learning_rate: float
    step: int
    tokens: int


@dataclass(frozen=True)
class EvalResult:
    """The loss of a forward pass (:meth:`Model.evaluate`).

    Attributes:
        loss: mean cross-entropy over counted label positions (0 when none counted).
        tokens: number of label positions that counted.
    """

    loss: float
    tokens: int

