"""Configuration dataclasses and enumerations, and their translation to the C structs.

Enumerations are :class:`enum.IntEnum` s whose values are the header's constants. Wherever a config
takes one, a case-insensitive name (``"llama"``, ``"cosine"``) is accepted too.

Adapter configs cross the C ABI as the JSON text of an ``adapter_config.json`` in the ecosystem's own
schema (Hugging Face PEFT's for LoRA, IA3, prefix and prompt tuning; AdapterHub's for bottleneck
adapters). The adapter dataclasses below take those schemas' field names and turn into such a dict
with ``to_dict()``; a plain dict (``peft.LoraConfig(...).to_dict()``) works as well. Adapter methods are
registered in :data:`ADAPTER_METHODS` (method name -> config class).
"""

from __future__ import annotations

import ctypes
import enum
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import _capi
from .errors import InvalidArgumentError, unknown_value


L = TypeVar("L", bound=enum.IntEnum)


def library_enum(cls: type[L], value: int, what: str) -> L:
    """An enum value read from the library; one this package does not know is an UnknownStatusError."""
    try:
        return cls(value)
    except ValueError:
        raise unknown_value(what, value) from None

# --------------------------------------------------------------------------------------------------
# Enumerations
# --------------------------------------------------------------------------------------------------


class Architecture(enum.IntEnum):
    """Model architecture (``PEFTKIT_ARCH_*``)."""

    GPT2 = _capi.PEFTKIT_ARCH_GPT2
    LLAMA = _capi.PEFTKIT_ARCH_LLAMA
    BERT = _capi.PEFTKIT_ARCH_BERT


class Method(enum.IntEnum):
    """Adapter method (``PEFTKIT_METHOD_*``)."""

    BOTTLENECK = _capi.PEFTKIT_METHOD_BOTTLENECK
    LORA = _capi.PEFTKIT_METHOD_LORA
    IA3 = _capi.PEFTKIT_METHOD_IA3
    PREFIX = _capi.PEFTKIT_METHOD_PREFIX
    PROMPT = _capi.PEFTKIT_METHOD_PROMPT


class Schedule(enum.IntEnum):
    """Learning-rate schedule (``PEFTKIT_SCHEDULE_*``), each after ``warmup_steps`` of linear warm-up."""

    CONSTANT = _capi.PEFTKIT_SCHEDULE_CONSTANT
    LINEAR = _capi.PEFTKIT_SCHEDULE_LINEAR
    COSINE = _capi.PEFTKIT_SCHEDULE_COSINE


class ActivationMemory(enum.IntEnum):
    """What each trained layer keeps for its backward (``PEFTKIT_ACTIVATIONS_*``); every choice gives the same
    gradients, bit for bit."""

    #: When the base's attention projections are quantized: RECOMPUTE_ATTENTION, and the up projection too in
    #: the top sixth of the trained layers (Llama); KEEP otherwise.
    AUTO = _capi.PEFTKIT_ACTIVATIONS_AUTO
    #: Keep each layer's q/k/v projections and attention-block output (fastest backward).
    KEEP = _capi.PEFTKIT_ACTIVATIONS_KEEP
    #: Recompute each layer's attention block in the backward (Llama, GPT-2): less memory, one more q/k/v
    #: and output projection per layer.
    RECOMPUTE_ATTENTION = _capi.PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION
    #: Also recompute a gated MLP's up projection (Llama): less memory still, one more up projection per layer.
    RECOMPUTE_ATTENTION_UP = _capi.PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION_UP


class FinishReason(enum.IntEnum):
    """Why generation stopped (``PEFTKIT_FINISH_*``), in :class:`GenerateResult`."""

    #: The last token is one of the stop tokens (it is included).
    STOP_TOKEN = _capi.PEFTKIT_FINISH_STOP_TOKEN
    #: The text contained one of the stop strings (the output ends before it).
    STOP_STRING = _capi.PEFTKIT_FINISH_STOP_STRING
    #: ``max_new_tokens`` tokens were produced.
    LENGTH = _capi.PEFTKIT_FINISH_LENGTH
    #: The model's ``max_positions`` was reached before ``max_new_tokens``.
    CONTEXT_FULL = _capi.PEFTKIT_FINISH_CONTEXT_FULL
    #: The callback asked to stop (or the stream was closed, or Ctrl-C).
    CANCELLED = _capi.PEFTKIT_FINISH_CANCELLED


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
            architecture=library_enum(Architecture, s.architecture, "architecture"),
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
# Adapter configs (the ecosystem's adapter_config.json schema)
# --------------------------------------------------------------------------------------------------


def jsonable(value: Any, what: str = "config") -> Any:
    """`value` as plain JSON data: PEFT's ``to_dict()`` holds sets (``target_modules``) and enums
    (``peft_type``, ``task_type``), which become a sorted list and the enum's value."""
    if isinstance(value, enum.Enum):
        return jsonable(value.value, what)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, enum.Enum):
                k = k.value
            if not isinstance(k, str):
                raise InvalidArgumentError(f"{what} has a key that is not a string: {k!r}")
            out[k] = jsonable(v, f"{what}[{k!r}]")
        return out
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v, what) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v, what) for v in value]
    raise InvalidArgumentError(f"{what} holds a {type(value).__name__}, which JSON cannot carry: {value!r}")


def _modules(value: str | Iterable[str] | None, what: str) -> str | tuple[str, ...] | None:
    """PEFT's ``target_modules`` / ``feedforward_modules``: a list of module names, or one string (a
    regular expression, or ``"all-linear"``). None = the method's default."""
    if value is None or isinstance(value, str):
        return value
    out = []
    for i, v in enumerate(sorted(value) if isinstance(value, (set, frozenset)) else value):
        if not isinstance(v, str):
            raise InvalidArgumentError(f"{what}[{i}] must be a string, got {v!r}")
        out.append(v)
    return tuple(out)


def _layer_list(value: int | Iterable[int] | None, what: str) -> int | tuple[int, ...] | None:
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else _int(value, what)
    return tuple(_int(v, f"{what}[{i}]") for i, v in enumerate(value))


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = jsonable(value, key)


@dataclass(frozen=True)
class BottleneckConfig:
    """A bottleneck adapter, ``x + up(act(down(x))) * scaling``, in AdapterHub's ``BnConfig`` terms
    and saved in AdapterHub's format. The defaults are ``SeqBnConfig`` (Pfeiffer); see
    :meth:`seq_bn` and :meth:`double_seq_bn` (Houlsby).

    Attributes:
        mh_adapter: an adapter after the attention block.
        output_adapter: an adapter after the feed-forward block.
        reduction_factor: bottleneck width = hidden_size / reduction_factor (at least 1).
        non_linearity: ``"relu"``, ``"gelu"`` (exact), ``"gelu_new"`` (tanh), ``"swish"``.
        original_ln_before: the adapter reads the residual stream (``seq_bn``) rather than the
            sub-layer output.
        ln_before, ln_after: a trainable LayerNorm on the adapter input / output.
        init_weights: ``"bert"`` (N(0, 0.02)), ``"houlsby"`` (near-identity) or ``"mam_adapter"``
            (exactly the identity at start).
        scaling: multiplies the up-projection output.
        leave_out: indices of the layers that get no adapter.
        seed: seed of the initial weights (PEFTKit's key); None = the library's default.
    """

    method: ClassVar[str] = "bottleneck"

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: float = 16.0
    non_linearity: str = "relu"
    original_ln_before: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    scaling: float = 1.0
    leave_out: tuple[int, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "leave_out", tuple(_layer_list(list(self.leave_out), "leave_out") or ()))

    @classmethod
    def seq_bn(cls, **fields_: Any) -> BottleneckConfig:
        """AdapterHub's ``SeqBnConfig`` (Pfeiffer et al.): one adapter after the feed-forward block."""
        return cls(**fields_)

    @classmethod
    def double_seq_bn(cls, **fields_: Any) -> BottleneckConfig:
        """AdapterHub's ``DoubleSeqBnConfig`` (Houlsby et al.): adapters after attention and after the
        feed-forward block, swish."""
        values = {"mh_adapter": True, "output_adapter": True, "non_linearity": "swish", "original_ln_before": False}
        return cls(**{**values, **fields_})

    pfeiffer = seq_bn
    houlsby = double_seq_bn

    def to_dict(self) -> dict[str, Any]:
        """The ``BnConfig`` dict, as AdapterHub's ``to_dict()`` names its keys."""
        d: dict[str, Any] = {"architecture": "bottleneck"}
        for f in fields(self):
            if f.name != "seed":
                d[f.name] = jsonable(getattr(self, f.name), f.name)
        _put(d, "seed", self.seed)
        return d


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA, ``y = W x + (lora_alpha / r) B A x`` on chosen frozen linears (rsLoRA: ``lora_alpha /
    sqrt(r)``), with PEFT's ``LoraConfig`` field names; saved in Hugging Face PEFT's format.

    Attributes:
        r: the rank.
        lora_alpha: the scaling numerator.
        lora_dropout: dropout on the LoRA branch's input while training, in [0, 1).
        target_modules: a list of module names (GPT-2 ``c_attn``, ``attn.c_proj``, ``c_fc``,
            ``mlp.c_proj``; Llama ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``,
            ``up_proj``, ``down_proj``), a regular expression, or ``"all-linear"``. None = PEFT's
            default (GPT-2 ``c_attn``; Llama ``q_proj, v_proj``).
        layers_to_transform: a layer index or a list of them; None means every layer.
        use_rslora: scale by ``lora_alpha / sqrt(r)``.
        seed: seed of A's initialisation (B starts at zero); None = the library's default.
    """

    method: ClassVar[str] = "lora"

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] | str | None = None
    layers_to_transform: tuple[int, ...] | int | None = None
    use_rslora: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _modules(self.target_modules, "target_modules"))
        object.__setattr__(self, "layers_to_transform", _layer_list(self.layers_to_transform, "layers_to_transform"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.r, "lora_alpha": self.lora_alpha,
                             "lora_dropout": self.lora_dropout, "use_rslora": self.use_rslora}
        _put(d, "target_modules", self.target_modules)
        _put(d, "layers_to_transform", self.layers_to_transform)
        _put(d, "seed", self.seed)
        return jsonable(d)


@dataclass(frozen=True)
class IA3Config:
    """IA3: learned vectors (starting at 1) that scale the outputs of chosen linears, or the inputs of
    feed-forward ones, with PEFT's ``IA3Config`` field names; saved in Hugging Face PEFT's format.

    Attributes:
        target_modules: as :class:`LoRAConfig`; None = PEFT's default (GPT-2 ``c_attn, mlp.c_proj``;
            Llama ``k_proj, v_proj, down_proj``).
        feedforward_modules: the targets scaled on their input; None with default targets = PEFT's
            default (GPT-2 ``mlp.c_proj``; Llama ``down_proj``), None with explicit targets = none.
        layers_to_transform: a layer index or a list of them; None means every layer.
    """

    method: ClassVar[str] = "ia3"

    target_modules: tuple[str, ...] | str | None = None
    feedforward_modules: tuple[str, ...] | str | None = None
    layers_to_transform: tuple[int, ...] | int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", _modules(self.target_modules, "target_modules"))
        object.__setattr__(self, "feedforward_modules", _modules(self.feedforward_modules, "feedforward_modules"))
        object.__setattr__(self, "layers_to_transform", _layer_list(self.layers_to_transform, "layers_to_transform"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"peft_type": "IA3", "task_type": "CAUSAL_LM"}
        _put(d, "target_modules", self.target_modules)
        _put(d, "feedforward_modules", self.feedforward_modules)
        _put(d, "layers_to_transform", self.layers_to_transform)
        return d


@dataclass(frozen=True)
class PrefixConfig:
    """Prefix tuning: trainable keys and values every attention layer sees before the sequence, with
    PEFT's ``PrefixTuningConfig`` field names; saved in Hugging Face PEFT's format.

    Attributes:
        num_virtual_tokens: prefix length.
        prefix_projection: train the prefix through an MLP (embedding -> Linear -> tanh -> Linear);
            the saved file holds the MLP's output rows, as PEFT's does.
        encoder_hidden_size: that MLP's width; None = the key/value width (PEFT's default).
        seed: seed of the initial weights; None = the library's default.
    """

    method: ClassVar[str] = "prefix"

    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM",
                             "num_virtual_tokens": self.num_virtual_tokens, "prefix_projection": self.prefix_projection}
        _put(d, "encoder_hidden_size", self.encoder_hidden_size)
        _put(d, "seed", self.seed)
        return jsonable(d)


@dataclass(frozen=True)
class PromptConfig:
    """Prompt tuning: trainable virtual-token embeddings prepended to the input, with PEFT's
    ``PromptTuningConfig`` field names; saved in Hugging Face PEFT's format.

    Attributes:
        num_virtual_tokens: number of virtual tokens.
        prompt_tuning_init: ``"RANDOM"`` (N(0, 1)) or ``"TEXT"`` (the embeddings of
            ``prompt_tuning_init_text``'s tokens, cycled; needs the model's tokenizer).
        prompt_tuning_init_text: the text of a TEXT init.
        init_token_ids: start from these tokens' embeddings, cycled (PEFTKit's key; a TEXT init with
            the ids given directly).
        seed: seed of the random init; None = the library's default.
    """

    method: ClassVar[str] = "prompt"

    num_virtual_tokens: int = 20
    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: str | None = None
    init_token_ids: tuple[int, ...] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.init_token_ids is not None:
            toks = int32_array(self.init_token_ids, "init_token_ids")
            object.__setattr__(self, "init_token_ids", tuple(int(v) for v in toks))  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM",
                             "num_virtual_tokens": self.num_virtual_tokens,
                             "prompt_tuning_init": jsonable(self.prompt_tuning_init)}
        _put(d, "prompt_tuning_init_text", self.prompt_tuning_init_text)
        _put(d, "init_token_ids", self.init_token_ids)
        _put(d, "seed", self.seed)
        return jsonable(d)


#: Adapter method name -> config class; ``Model.attach_adapter(name, method=...)`` looks methods up here.
ADAPTER_METHODS: dict[str, type[Any]] = {
    cls.method: cls for cls in (BottleneckConfig, LoRAConfig, IA3Config, PrefixConfig, PromptConfig)
}

AdapterConfig = Union[BottleneckConfig, LoRAConfig, IA3Config, PrefixConfig, PromptConfig]


def adapter_config_dict(config: Any, method: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``adapter_config.json`` dict ``attach_adapter`` sends: `config` as a dict in the ecosystem's
    schema (`options` override its keys), an instance of a registered class (`options` override its
    fields), or the class registered for `method` (default ``"bottleneck"``) built from `options`."""
    if isinstance(config, Mapping):
        if method is not None:
            raise InvalidArgumentError("method= is for building a config from options; a dict names its own method")
        return jsonable({**config, **options})
    if config is not None:
        if type(config) not in ADAPTER_METHODS.values():
            raise TypeError(f"config must be one of {', '.join(c.__name__ for c in ADAPTER_METHODS.values())} "
                            f"or a dict in PEFT's / AdapterHub's adapter_config.json schema, got {type(config).__name__}")
        if method is not None and method != config.method:
            raise InvalidArgumentError(f"method {method!r} does not match a {type(config).__name__}")
        return _make(type(config), config, options).to_dict()
    name = "bottleneck" if method is None else str(method).lower()
    cls = ADAPTER_METHODS.get(name)
    if cls is None:
        raise InvalidArgumentError(f"unknown adapter method {method!r}; known: {', '.join(sorted(ADAPTER_METHODS))}")
    return _make(cls, None, options).to_dict()


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
        micro_batch_size: at most this many rows per micro-batch (gradient accumulation, same gradient,
            less memory); batch B runs as ceil(B / micro_batch_size) near-equal parts. 0 = the whole batch.
        lora_plus_ratio: LoRA+ (PEFT's ``loraplus_lr_ratio``): LoRA's B matrices train at this times the
            learning rate; 0 = the adapter's own ratio if its config has one, else off.
        gradient_checkpointing: recompute each layer's activations in the backward (same gradients, less
            memory, one more forward per step).
        activation_memory: an :class:`ActivationMemory` (or its name, ``"keep"``...): what each layer keeps
            when not checkpointing; same gradients either way.
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
    lora_plus_ratio: float = 0.0
    gradient_checkpointing: bool = False
    activation_memory: ActivationMemory = ActivationMemory.AUTO

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", _enum(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "activation_memory", _enum(ActivationMemory, self.activation_memory, "activation_memory"))

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
        s.lora_plus_ratio = _float(self.lora_plus_ratio, "lora_plus_ratio")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(f"gradient_checkpointing must be a bool, got {type(self.gradient_checkpointing).__name__}")
        s.gradient_checkpointing = 1 if self.gradient_checkpointing else 0
        s.activation_memory = int(self.activation_memory)
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
class ForwardResult:
    """What :meth:`Model.forward` returns when asked for more than all logits.

    Attributes:
        logits: ``[batch, seq_len, vocab]`` (``logits="all"``), ``[batch, vocab]`` (``"last"``: each row's last
            position), or None (``"none"``).
        token_logprobs: ``[batch, seq_len]`` float32 with ``return_logprobs=True`` (else None): at ``[b, t]`` the
            log-probability of ``labels[b, t]`` given the tokens before t (labels shifted as for the loss), 0 where
            the label does not count (-100, and t = 0 unless the adapter adds virtual tokens).
        row_losses: ``[batch]`` float32 mean loss of each row (0 when none of its labels counts); None with
            ``return_loss=False``.
        row_tokens: ``[batch]`` int64 counted labels of each row; None with ``return_loss=False``.
        loss: mean loss over all counted labels (= row losses weighted by row tokens); None with
            ``return_loss=False``.
        tokens: counted labels.
    """

    logits: npt.NDArray[np.float32] | None
    token_logprobs: npt.NDArray[np.float32] | None
    row_losses: npt.NDArray[np.float32] | None
    row_tokens: npt.NDArray[np.int64] | None
    loss: float | None
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

