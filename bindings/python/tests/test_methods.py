"""The adapter methods through Python: config classes, parameter counts, Hugging Face PEFT files
(Tests/Fixtures/peft, written by scripts/make_peft_fixtures.py with peft 0.18.1) and save/load."""

import enum
import json

import numpy as np
import peftkit
import pytest
from conftest import FIXTURES
from safetensors_np import read_safetensors
from test_parity import ADAMW, assert_close

PEFT = FIXTURES / "peft"
CASES = [(a, k) for a in ("gpt2", "llama") for k in ("lora", "rslora", "ia3", "prefix", "prompt")]


def tiny(arch="gpt2"):
    return peftkit.Model.create({"architecture": arch, "num_kv_heads": 2 if arch == "llama" else None}, seed=3)


@pytest.mark.parametrize(
    "config, count",
    [
        # tiny GPT-2: hidden 64, 2 layers, 4 heads; c_attn is 64 -> 192, c_fc 64 -> 256.
        (peftkit.LoRAConfig(r=8), 2 * 8 * (64 + 192)),
        (peftkit.LoRAConfig(r=4, target_modules=["c_attn", "c_fc"], layers_to_transform=[1]), 4 * (64 + 192) + 4 * (64 + 256)),
        (peftkit.LoRAConfig(r=4, target_modules=r".*\.1\.attn\.c_attn"), 4 * (64 + 192)),
        (peftkit.IA3Config(), 2 * (192 + 256)),
        (peftkit.PrefixConfig(num_virtual_tokens=5), 5 * 2 * 2 * 64),
        (peftkit.PrefixConfig(num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=16),
         5 * 64 + (16 * 64 + 16) + (2 * 2 * 64 * 16 + 2 * 2 * 64)),
        (peftkit.PromptConfig(num_virtual_tokens=7), 7 * 64),
        (peftkit.PromptConfig(num_virtual_tokens=3, init_token_ids=[5, 6]), 3 * 64),
        (peftkit.BottleneckConfig(), 2 * (64 * 4 + 4 + 4 * 64 + 64)),
        (peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8, leave_out=[0]), 2 * (64 * 8 + 8 + 8 * 64 + 64)),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, int) else str(v),
)
def test_config_classes_attach_with_peft_parameter_counts(config, count):
    with tiny() as m:
        m.attach_adapter("a", config)
        assert m.adapter_num_params("a") == count
        # The same through method= and keyword options, and through the dict.
        fields = {k: v for k, v in config.__dict__.items()}
        m.attach_adapter("b", method=config.method, **fields)
        assert m.adapter_num_params("b") == count
        m.attach_adapter("c", config.to_dict())
        assert m.adapter_num_params("c") == count
        json.dumps(config.to_dict())  # plain JSON data


def test_method_names_and_bad_options():
    assert set(peftkit.ADAPTER_METHODS) == {"bottleneck", "lora", "ia3", "prefix", "prompt"}
    assert peftkit.LoRAConfig(target_modules={"v_proj", "q_proj"}).target_modules == ("q_proj", "v_proj")
    assert peftkit.LoRAConfig(target_modules="all-linear").target_modules == "all-linear"
    with pytest.raises(peftkit.InvalidArgumentError):
        peftkit.LoRAConfig(target_modules=["q_proj", 3])
    with tiny() as m:
        for bad, error in (
            (peftkit.LoRAConfig(r=0), peftkit.InvalidArgumentError),
            (peftkit.LoRAConfig(lora_dropout=1.0), peftkit.InvalidArgumentError),
            (peftkit.LoRAConfig(lora_alpha=float("nan")), peftkit.InvalidArgumentError),
            (peftkit.LoRAConfig(r="8"), peftkit.FormatError),
            (peftkit.LoRAConfig(target_modules="q_proj"), peftkit.FormatError),  # a regex matching nothing
            (peftkit.LoRAConfig(target_modules=["q_proj"]), peftkit.UnsupportedError),  # a Llama name on GPT-2
            (peftkit.IA3Config(layers_to_transform=[5]), peftkit.FormatError),
            (peftkit.PrefixConfig(num_virtual_tokens=0), peftkit.FormatError),
            (peftkit.PromptConfig(init_token_ids=[10**6]), peftkit.InvalidArgumentError),
            (peftkit.PromptConfig(prompt_tuning_init="TEXT", prompt_tuning_init_text="hi"), peftkit.StateError),
        ):
            with pytest.raises(error):
                m.attach_adapter("x", bad)
            assert m.adapters == []


# What peft 0.18.1's `LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"],
# task_type="CAUSAL_LM").to_dict()` returns, written out so that the test needs no PEFT: every key of its
# adapter_config.json (Tests/Fixtures/peft/*/lora/adapter), with the in-memory types (a set, enums).
class PeftType(str, enum.Enum):
    LORA = "LORA"


class TaskType(str, enum.Enum):
    CAUSAL_LM = "CAUSAL_LM"


PEFT_LORA_DICT = {
    "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None, "auto_mapping": None,
    "base_model_name_or_path": None, "bias": "none", "corda_config": None, "ensure_weight_tying": False,
    "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": False,
    "init_lora_weights": True, "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
    "loftq_config": {}, "lora_alpha": 8, "lora_bias": False, "lora_dropout": 0.0, "megatron_config": None,
    "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": PeftType.LORA, "peft_version": "0.18.1",
    "qalora_group_size": 16, "r": 4, "rank_pattern": {}, "revision": None, "target_modules": {"mlp.c_proj", "c_attn"},
    "target_parameters": None, "task_type": TaskType.CAUSAL_LM, "trainable_token_indices": None, "use_dora": False,
    "use_qalora": False, "use_rslora": False,
}


def test_peft_fixture_has_the_key_set_of_the_dict_above():
    saved = json.loads((PEFT / "gpt2" / "lora" / "adapter" / "adapter_config.json").read_text())
    assert set(saved) == set(PEFT_LORA_DICT)


def test_a_peft_lora_dict_attaches_and_equals_the_dataclass(tmp_path):
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [8, 7, 6, 5, 4, 3, 2, 1]], dtype=np.int32)
    with tiny() as m:
        m.attach_adapter("peft", PEFT_LORA_DICT)
        m.attach_adapter("mine", peftkit.LoRAConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"]))
        assert m.adapter_method("peft") == peftkit.Method.LORA
        assert m.adapter_num_params("peft") == m.adapter_num_params("mine") == 2 * 4 * ((64 + 192) + (256 + 64))
        logits = {}
        for name in ("peft", "mine"):
            m.set_active_adapter(name)
            for _ in range(3):
                m.train_step(ids, learning_rate=1e-2)
            logits[name] = m.forward(ids)
            m.save_adapter(name, tmp_path / name)
        np.testing.assert_array_equal(logits["peft"], logits["mine"])
        assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text()) == \
            json.loads((tmp_path / "mine" / "adapter_config.json").read_text())
        a = read_safetensors(tmp_path / "peft" / "adapter_model.safetensors")
        b = read_safetensors(tmp_path / "mine" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("config", [
    peftkit.LoRAConfig(r=4, lora_alpha=16, lora_dropout=0.1, target_modules=["c_attn", "c_fc"], layers_to_transform=[1],
                       use_rslora=True, seed=3),
    peftkit.IA3Config(target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"]),
    peftkit.PrefixConfig(num_virtual_tokens=4),
    peftkit.PromptConfig(num_virtual_tokens=4, init_token_ids=[3, 4]),
    peftkit.BottleneckConfig.double_seq_bn(reduction_factor=8, ln_after=True, init_weights="houlsby", seed=9),
], ids=lambda c: type(c).__name__)
def test_a_saved_adapter_config_reattaches_as_an_equal_adapter(config, tmp_path):
    """The adapter_config.json that saving writes, given back to attach_adapter, describes the same
    adapter: the same parameter count, and saving that adapter writes the same config again."""
    with tiny() as m:
        m.attach_adapter("a", config)
        m.save_adapter("a", tmp_path / "a")
        saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
        m.attach_adapter("b", saved)
        assert m.adapter_num_params("b") == m.adapter_num_params("a")
        assert m.adapter_method("b") == m.adapter_method("a")
        m.save_adapter("b", tmp_path / "b")
        again = json.loads((tmp_path / "b" / "adapter_config.json").read_text())
        if config.method == "bottleneck":  # AdapterHub's file names the adapter
            saved["name"] = again["name"] = None
        assert again == saved


@pytest.mark.parametrize("key, value, named", [
    ("use_qalora", True, "use_qalora"),
    ("rank_pattern", {"c_attn": 2}, "rank_pattern"),
    ("loftq_config", {"loftq_bits": 4}, "loftq_config"),
    ("some_future_option", 3, "some_future_option"),
])
def test_an_unsupported_key_raises_unsupported_naming_it(key, value, named):
    with tiny() as m:
        with pytest.raises(peftkit.UnsupportedError, match=named):
            m.attach_adapter("x", {**PEFT_LORA_DICT, key: value})
        assert m.adapters == []
        # Inert keys are accepted.
        m.attach_adapter("ok", {**PEFT_LORA_DICT, "base_model_name_or_path": "gpt2", "revision": "main",
                                "inference_mode": True})


def test_jsonable_turns_sets_and_enums_into_json():
    from peftkit.configs import jsonable
    assert jsonable({"t": {"b", "a"}, "p": PeftType.LORA, "n": np.int64(3), "x": (1, 2)}) == \
        {"t": ["a", "b"], "p": "LORA", "n": 3, "x": [1, 2]}
    with pytest.raises(peftkit.InvalidArgumentError):
        jsonable({"f": object()})


@pytest.mark.parametrize("arch, kind", CASES)
def test_peft_folders_load_with_peft_logits_and_train_like_peft(arch, kind):
    r = read_safetensors(PEFT / arch / kind / "reference.safetensors")
    ids, labels = r["input_ids"], r["labels"]
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        assert m.load_adapter(PEFT / arch / kind / "adapter") == "default"
        m.set_active_adapter("default")
        want = r["logits"][:, 5:] if kind == "prompt" else r["logits"]
        assert_close(f"{arch}/{kind} logits", m.forward(ids), want, 1e-5)
        losses = [m.train_step(ids, labels, **ADAMW).loss for _ in range(10)]
        assert_close(f"{arch}/{kind} AdamW losses", losses, r["adam_losses"], 1e-5)


@pytest.mark.parametrize("arch, kind", CASES)
def test_saved_folders_are_peft_files(arch, kind, tmp_path):
    with peftkit.Model.load(FIXTURES / arch / "model") as m:
        m.load_adapter(PEFT / arch / kind / "adapter", name="x")
        m.set_active_adapter("x")
        m.train_step(r := read_safetensors(PEFT / arch / kind / "reference.safetensors")["input_ids"], learning_rate=1e-2)
        before = m.forward(r)
        m.save_adapter("x", tmp_path / "out")
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
        theirs = json.loads((PEFT / arch / kind / "adapter" / "adapter_config.json").read_text())
        assert cfg["peft_type"] == theirs["peft_type"] and cfg["task_type"] == "CAUSAL_LM"
        for key in ("r", "lora_alpha", "use_rslora", "fan_in_fan_out", "layers_to_transform", "num_virtual_tokens",
                    "token_dim", "num_attention_heads", "num_layers"):
            assert cfg.get(key) == theirs.get(key), key
        for key in ("target_modules", "feedforward_modules"):
            assert set(cfg.get(key) or []) == set(theirs.get(key) or []), key
        mine = read_safetensors(tmp_path / "out" / "adapter_model.safetensors")
        peft_file = read_safetensors(PEFT / arch / kind / "adapter" / "adapter_model.safetensors")
        assert {k: v.shape for k, v in mine.items()} == {k: v.shape for k, v in peft_file.items()}
        assert any(not np.array_equal(mine[k], peft_file[k]) for k in mine), "training changed the weights"
        m.load_adapter(tmp_path / "out", name="y")
        m.set_active_adapter("y")
        np.testing.assert_array_equal(m.forward(r), before)


def test_peft_options_peftkit_lacks_are_refused(tmp_path):
    src = PEFT / "gpt2" / "lora" / "adapter"
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["use_qalora"] = True
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    (tmp_path / "adapter_model.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    with peftkit.Model.load(FIXTURES / "gpt2" / "model") as m:
        with pytest.raises(peftkit.UnsupportedError, match="use_qalora"):
            m.load_adapter(tmp_path)
        assert m.adapters == []


def test_merge_mixed_batches_and_checkpoints(tmp_path):
    r = read_safetensors(PEFT / "llama" / "lora" / "reference.safetensors")
    ids = r["input_ids"]
    with peftkit.Model.load(FIXTURES / "llama" / "model") as m:
        m.load_adapter(PEFT / "llama" / "lora" / "adapter", name="lora")
        m.load_adapter(PEFT / "llama" / "prompt" / "adapter", name="prompt")
        assert m.adapter_method("lora") == peftkit.Method.LORA and m.adapter_method("prompt") == peftkit.Method.PROMPT
        base = m.forward(ids)
        mixed = m.forward(ids, adapters=["lora", None])
        assert_close("mixed row 0 = lora", mixed[0], r["logits"][0], 1e-5)
        # Row 1 runs in a smaller product than in the whole batch: OpenBLAS may pick another kernel for it.
        assert_close("mixed row 1 = base", mixed[1], base[1], 1e-6)
        with pytest.raises(peftkit.InvalidArgumentError):
            m.forward(ids, adapters=["lora"])
        with pytest.raises(peftkit.NotFoundError):
            m.forward(ids, adapters=["lora", "nope"])
        m.merge_adapter("lora")
        assert_close("merged base", m.forward(ids), r["merged_logits"], 1e-5)
        with pytest.raises(peftkit.UnsupportedError):
            m.merge_adapter("prompt")
        m.unmerge_adapter("lora")
        np.testing.assert_array_equal(m.forward(ids), base)
        # A checkpoint resumes training bit for bit.
        m.set_active_adapter("prompt")
        m.train_step(ids, learning_rate=1e-2)
        m.save_checkpoint("prompt", tmp_path / "ckpt")
        losses = [m.train_step(ids, learning_rate=1e-2).loss for _ in range(3)]
    with peftkit.Model.load(FIXTURES / "llama" / "model") as m2:
        assert m2.load_checkpoint(tmp_path / "ckpt") == "prompt"
        m2.set_active_adapter("prompt")
        assert [m2.train_step(ids, learning_rate=1e-2).loss for _ in range(3)] == losses


def test_generate_mixed_rows_equal_each_prompt_alone():
    with peftkit.Model.load(FIXTURES / "gpt2" / "model") as m:
        m.load_adapter(PEFT / "gpt2" / "lora" / "adapter", name="lora")
        m.load_adapter(PEFT / "gpt2" / "prefix" / "adapter", name="prefix")
        prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
        choice = ["lora", None, "prefix"]
        outs = m.generate_mixed(prompts, choice, max_new_tokens=6, temperature=0.8, seed=5)
        assert m.active_adapter is None
        for p, a, o in zip(prompts, choice, outs):
            m.set_active_adapter(a)
            np.testing.assert_array_equal(o, m.generate(p, max_new_tokens=6, temperature=0.8, seed=5))
        m.set_active_adapter(None)
        with pytest.raises(peftkit.NotFoundError):
            m.generate_mixed(prompts, ["lora", None, "nope"])
        with pytest.raises(peftkit.InvalidArgumentError):
            m.generate_mixed(prompts, ["lora"])
        with pytest.raises(peftkit.InvalidArgumentError):
            m.generate_mixed([[1], [10**6]], [None, None])
