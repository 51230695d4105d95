/*
 * peftkit.h — the C interface of PEFTKit (libpeftkit.so).
 *
 * PEFTKit fine-tunes small adapters on top of a frozen decoder-only language model (GPT-2 or Llama
 * shapes), in fp32 on the CPU. This header is the whole ABI contract: every exported symbol is declared
 * here, every status code and enum value is listed once, and none is ever renumbered or given a new
 * meaning. Later versions only add.
 *
 * ---------------------------------------------------------------------------------------------------
 * CONVENTIONS
 * ---------------------------------------------------------------------------------------------------
 *
 * Status codes. Every function that can fail returns a `peftkit_status`: PEFTKIT_OK (0) on success, a
 * negative PEFTKIT_ERR_* code on failure. On failure a message is available from peftkit_last_error()
 * and no output parameter documented as "set on success" has been written, unless the function says
 * otherwise.
 *
 * Structs and versions. Each struct starts with `uint32_t struct_size`, the size of the struct as the
 * caller was compiled: that size is the authority, in both directions.
 * - Input structs (the *_config ones): fill one with its *_init macro, which passes sizeof your struct to
 *   the *_init_sized function (it writes the defaults into exactly that many bytes and sets struct_size),
 *   then change the fields you need. The library reads only the bytes struct_size covers; a field your
 *   header did not have yet takes its default.
 * - Output structs (peftkit_train_result, peftkit_tokenizer_info, peftkit_model_config when read back):
 *   set struct_size = sizeof the struct. The library writes only the bytes struct_size covers and leaves
 *   struct_size itself as you set it.
 * - A struct_size smaller than this header's struct must be the size the struct had in an earlier
 *   version (the end of one of its fields after struct_size); anything else is PEFTKIT_ERR_INVALID_ARGUMENT, as are 0 and
 *   sizes above 65536.
 * - A struct_size larger than the library knows (a program compiled against a newer header, running with
 *   an older library) is accepted when every byte the library does not know is zero: a field added later
 *   means "behave as before" at 0, and the *_init functions of an older library write 0 there. A non-zero
 *   unknown byte in an input struct is PEFTKIT_ERR_UNSUPPORTED (the caller asked for something this
 *   library does not implement); an output struct's unknown bytes are set to 0.
 * - Fields are only ever appended, and no struct has padding: every struct's size is the end of its last
 *   field (test_abi.c checks it), so appending a field always changes the size. A field whose alignment
 *   would leave a gap is preceded by an explicit `reserved` field that must be 0.
 *
 * Booleans are int32_t fields holding 0 or 1. Some fields also accept -1, meaning "the default for the
 * chosen architecture / preset"; those fields say so. Any other value is PEFTKIT_ERR_INVALID_ARGUMENT.
 *
 * Enum fields are int32_t holding one of the PEFTKIT_* constants below. Unknown values are
 * PEFTKIT_ERR_INVALID_ARGUMENT, never undefined behaviour.
 *
 * Strings. Input strings are NUL-terminated UTF-8, borrowed only for the duration of the call (the
 * library keeps its own copy). Strings the library returns as `const char *` are owned by the library;
 * each function states how long its string stays valid. Strings the library writes into a caller
 * buffer (`char *buf, size_t cap`) are always NUL-terminated; if the string and its NUL do not fit, the
 * function writes nothing into buf and returns PEFTKIT_ERR_BUFFER_TOO_SMALL.
 *
 * Arrays are passed as a pointer plus an element count. The library cannot see how large your array
 * really is: it reads exactly the number of elements the count implies.
 *
 * Tokens are int32_t ids in [0, vocab_size). Labels are token ids or PEFTKIT_IGNORE_INDEX (-100), which
 * marks a position that does not count towards the loss. Labels are shifted inside the library:
 * position t is scored against label t+1, as Hugging Face transformers does.
 *
 * ---------------------------------------------------------------------------------------------------
 * THREAD SAFETY
 * ---------------------------------------------------------------------------------------------------
 *
 * - Distinct models may be used from different threads at the same time.
 * - Calls on one model must not overlap. A call that starts while another call on the same model is
 *   still running fails with PEFTKIT_ERR_BUSY and leaves the model untouched; it never corrupts it.
 *   This includes calls made from inside a peftkit_token_callback on the model that is generating.
 *   The exceptions may overlap anything but peftkit_model_free: the tokenizer functions (see
 *   Tokenization; peftkit_tokenizer_load replaces the tokenizer for calls that start after it) and the
 *   reads of the adapter list (peftkit_adapter_count, peftkit_adapter_name, peftkit_adapter_get_active),
 *   which see the list as the last finished call left it.
 * - peftkit_model_free must not overlap any other call on the same model (it is the one exception to
 *   the rule above: freeing a model in use is undefined behaviour).
 * - Model pointers are checked against the set of live models: a call with a pointer that was freed, or
 *   never returned by peftkit_model_create / peftkit_model_load, fails with PEFTKIT_ERR_INVALID_ARGUMENT,
 *   and freeing it again is a no-op. This is best effort, not a licence: once a new model happens to reuse
 *   the address, a stale pointer names that new model.
 * - A call that finds its model in use by another call fails with PEFTKIT_ERR_BUSY (retry later);
 *   PEFTKIT_ERR_STATE is kept for requests the model's state does not allow (a logic error).
 * - peftkit_last_error() is per thread.
 * - peftkit_set_num_threads() affects the whole process and may be called at any time (see its comment).
 *
 * ---------------------------------------------------------------------------------------------------
 * LINKING
 * ---------------------------------------------------------------------------------------------------
 *
 * libpeftkit.so has the SONAME libpeftkit.so.1 (the ABI generation: it changes only if an exported
 * function or struct layout ever changes incompatibly) and installs as libpeftkit.so.MAJOR.MINOR.PATCH
 * with the links libpeftkit.so.1 and libpeftkit.so. Every exported symbol starts with peftkit_ and carries
 * the symbol version PEFTKIT_1; nothing else is exported.
 */

#ifndef PEFTKIT_H
#define PEFTKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===================================================================================================
 * Version
 * =================================================================================================== */

#define PEFTKIT_VERSION_MAJOR 0
#define PEFTKIT_VERSION_MINOR 2
#define PEFTKIT_VERSION_PATCH 0
/* The version as a string, "MAJOR.MINOR.PATCH". */
#define PEFTKIT_VERSION_STRING "0.2.0"
/* The version as one comparable number: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define PEFTKIT_VERSION_NUMBER (PEFTKIT_VERSION_MAJOR * 10000 + PEFTKIT_VERSION_MINOR * 100 + PEFTKIT_VERSION_PATCH)

/*
 * The version of the library actually loaded, "MAJOR.MINOR.PATCH". Compare it with
 * PEFTKIT_VERSION_STRING to detect a header/library mismatch. The string is static: never free it.
 */
const char *peftkit_version(void);

/*
 * The version of the library actually loaded as one number, MAJOR * 10000 + MINOR * 100 + PATCH: compare
 * it with PEFTKIT_VERSION_NUMBER (a library at least as new as the header: >=).
 */
int32_t peftkit_version_number(void);

/* ===================================================================================================
 * Status codes
 *
 * Values are fixed forever. New codes may be added (with new negative values); existing ones are never
 * renumbered or repurposed. Treat any negative value you do not know as a failure.
 * =================================================================================================== */

typedef int32_t peftkit_status;

/* Success. */
#define PEFTKIT_OK 0
/* An argument is NULL where it may not be, out of range, inconsistent with another argument, not valid
 * UTF-8, or a config struct has a wrong struct_size or an unknown enum value. Nothing was changed. */
#define PEFTKIT_ERR_INVALID_ARGUMENT (-1)
/* A file or folder could not be opened, read, written or renamed. */
#define PEFTKIT_ERR_IO (-2)
/* A file was read but its contents are malformed, inconsistent, or do not fit this model. */
#define PEFTKIT_ERR_FORMAT (-3)
/* The request is well-formed but not supported by this build or this model. */
#define PEFTKIT_ERR_UNSUPPORTED (-4)
/* A named thing (an adapter, a tensor in a file) does not exist. */
#define PEFTKIT_ERR_NOT_FOUND (-5)
/* The computation produced NaN or infinity; the adapter weights were not updated. */
#define PEFTKIT_ERR_NUMERICAL (-6)
/* The call is not allowed in the model's current state: training with no active adapter, attaching a
 * name that already exists. (A call overlapping another call on the same model is PEFTKIT_ERR_BUSY.) */
#define PEFTKIT_ERR_STATE (-7)
/* Memory could not be allocated, or a requested size overflows. */
#define PEFTKIT_ERR_OUT_OF_MEMORY (-8)
/* An output buffer supplied by the caller is too small. Nothing was written into it and nothing else
 * was changed. The message from peftkit_last_error() states the size needed. */
#define PEFTKIT_ERR_BUFFER_TOO_SMALL (-9)
/* An unexpected failure inside the library (a bug). The model is unchanged if the call modifies one. */
#define PEFTKIT_ERR_INTERNAL (-10)
/* The model is in use by another call that is still running (calls on one model must not overlap).
 * Nothing was changed; the same call may succeed once the other one has returned. */
#define PEFTKIT_ERR_BUSY (-11)
/* A progress callback returned 0 (see peftkit_progress_callback): the call stopped early and changed nothing
 * (a load returns no model and keeps no memory; a train step leaves weights, optimiser state and step count as
 * they were). */
#define PEFTKIT_ERR_CANCELLED (-12)

/*
 * A short English description of a status code ("invalid argument", "model in use by another call", ...),
 * or "unknown status" for a value this library does not define. Never NULL; the string is static: never
 * free it. peftkit_last_error() says more about the last failure.
 */
const char *peftkit_status_string(peftkit_status status);

/*
 * The message of the last failing call made on this thread, as NUL-terminated UTF-8. Never NULL: it is
 * "" if no call on this thread has failed yet. Successful calls do not change it. The string is owned by
 * the library and stays valid until the next failing PEFTKit call on the same thread (or until the
 * thread exits); copy it if you need it longer.
 */
const char *peftkit_last_error(void);

/* ===================================================================================================
 * Process-wide settings
 * =================================================================================================== */

/*
 * Sets the number of threads PEFTKit's pool uses, for the whole process: the pool runs PEFTKit's own
 * loops and splits its matrix multiplications (OpenBLAS itself runs single-threaded inside each piece).
 * n <= 0 restores the default: the number of online cores. Values above 1024 are clamped to 1024.
 * Always returns PEFTKIT_OK.
 *
 * It may be called at any time, from any thread: PEFTKit's loops and products read the count each time
 * one starts, so a running call switches at its next loop; it never waits for running calls.
 *
 * OpenBLAS: PEFTKit sets OpenBLAS to one thread once, before its first loop or product (the only change it
 * makes to OpenBLAS's process-wide state), and never changes it again. A host that uses the same
 * libopenblas for its own products and wants it threaded may set it back; PEFTKit's products then run
 * on both pools and oversubscribe the cores. numpy's wheels bring their own OpenBLAS and are unaffected.
 */
peftkit_status peftkit_set_num_threads(int32_t n);

/* ===================================================================================================
 * Enumerations (int32_t constants)
 * =================================================================================================== */

/* Model architectures (peftkit_model_config.architecture). */
/* GPT-2: LayerNorm with bias, learned positions, GELU (tanh), fused qkv, tied LM head. */
#define PEFTKIT_ARCH_GPT2 0
/* Llama: RMSNorm, RoPE, SwiGLU MLP, grouped-query attention. */
#define PEFTKIT_ARCH_LLAMA 1
/* BERT encoder: post-LayerNorm, learned positions, token types, GELU (erf), bidirectional attention, pooler.
   Token types and padding masks are taken by the encoder functions (peftkit_encoder_*, peftkit_head_*). */
#define PEFTKIT_ARCH_BERT 2

/* Adapter methods (peftkit_adapter_method). Later versions add more methods. */
/* Bottleneck adapter (Houlsby et al. 2019): x + up(act(down(x))) * scaling, AdapterHub-compatible. */
#define PEFTKIT_METHOD_BOTTLENECK 0
/* LoRA (Hu et al. 2021): W x + (alpha / r) B A x on chosen linears (rsLoRA: alpha / sqrt(r)). HF PEFT files. */
#define PEFTKIT_METHOD_LORA 1
/* IA3 (Liu et al. 2022): learned vectors scaling keys, values and the feed-forward inner activation. */
#define PEFTKIT_METHOD_IA3 2
/* Prefix tuning (Li & Liang 2021): trainable keys/values before every layer's attention. */
#define PEFTKIT_METHOD_PREFIX 3
/* Prompt tuning (Lester et al. 2021): trainable virtual-token embeddings before the input. */
#define PEFTKIT_METHOD_PROMPT 4

/* Learning-rate schedules (peftkit_train_config.schedule). All start with warmup_steps of linear
 * warm-up from 0. */
#define PEFTKIT_SCHEDULE_CONSTANT 0
/* Linear decay to 0 at total_steps. */
#define PEFTKIT_SCHEDULE_LINEAR 1
/* Half-cosine decay to 0 at total_steps. */
#define PEFTKIT_SCHEDULE_COSINE 2

/* What each trained layer keeps for its backward (peftkit_train_config.activation_memory). Every choice
 * gives the same gradients, bit for bit. */
/* When the base's attention projections are quantized (GGUF blocks): RECOMPUTE_ATTENTION, and the up
 * projection too in the top sixth of the trained layers (Llama); KEEP otherwise. */
#define PEFTKIT_ACTIVATIONS_AUTO 0
/* Each layer keeps its q/k/v projections and its attention block's output (the fastest backward). */
#define PEFTKIT_ACTIVATIONS_KEEP 1
/* Each layer's backward recomputes its attention block from the layer's input (Llama, GPT-2; BERT keeps
 * it): (q/k/v width + hidden size) floats less per token and layer, one more q/k/v and output projection
 * per layer and step. */
#define PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION 2
/* RECOMPUTE_ATTENTION, and a gated MLP's up projection too (Llama; kept in layers whose gate projection the
 * adapter hooks): intermediate-size floats less per token and layer, one more up projection per layer. */
#define PEFTKIT_ACTIVATIONS_RECOMPUTE_ATTENTION_UP 3

/* Label value that does not count towards the loss. */
#define PEFTKIT_IGNORE_INDEX (-100)

/* ===================================================================================================
 * Model
 * =================================================================================================== */

/* A decoder model: frozen base weights plus any number of named adapters, at most one active.
 * Opaque; create with peftkit_model_create or peftkit_model_load, release with peftkit_model_free. */
typedef struct peftkit_model peftkit_model;

/*
 * The shape of a decoder. Field meanings follow Hugging Face config.json.
 *
 * Defaults set by peftkit_model_config_init: a tiny GPT-2, small enough to train in a test in well under
 * a second per step:
 *   architecture GPT2, vocab_size 256 (one id per byte), hidden_size 64, num_layers 2, num_heads 4,
 *   max_positions 1024, rope_theta 10000, tie_word_embeddings 1, and every "0 / -1 = derived" field
 *   left derived: num_kv_heads = num_heads, head_dim = 16, intermediate_size = 256, norm_eps = 1e-5,
 *   biases on.
 * For the GPT-2 124M shape set vocab_size 50257, hidden_size 768, num_layers 12, num_heads 12.
 *
 * peftkit_model_get_config always reports concrete values (never 0 / -1 placeholders).
 */
typedef struct peftkit_model_config {
    uint32_t struct_size;        /* sizeof(peftkit_model_config); set by peftkit_model_config_init */
    int32_t architecture;        /* PEFTKIT_ARCH_*; default GPT2 */
    int32_t vocab_size;          /* 1 .. 16777216; default 256 */
    int32_t hidden_size;         /* 1 .. 65536; default 64 */
    int32_t num_layers;          /* 1 .. 1024; default 2 */
    int32_t num_heads;           /* 1 .. 1024; default 4 */
    int32_t num_kv_heads;        /* key/value heads, must divide num_heads (GPT-2: equal); 0 = num_heads */
    int32_t head_dim;            /* per-head size; 0 = hidden_size / num_heads */
    int32_t intermediate_size;   /* MLP inner size; 0 = 4 * hidden_size */
    int32_t max_positions;       /* longest sequence, 1 .. 1048576; default 1024 */
    float norm_eps;              /* LayerNorm/RMSNorm epsilon; 0 = 1e-5 (GPT-2) or 1e-6 (Llama) */
    float rope_theta;            /* RoPE base (Llama only); default 10000 */
    int32_t tie_word_embeddings; /* 0/1; LM head shares the embedding matrix. GPT-2 always ties (0 is
                                    ignored); default 1 */
    int32_t qkv_bias;            /* 0/1, -1 = architecture default (GPT-2 1, Llama 0); default -1 */
    int32_t output_bias;         /* 0/1, -1 = architecture default (GPT-2 1, Llama 0); default -1 */
    int32_t mlp_bias;            /* 0/1, -1 = architecture default (GPT-2 1, Llama 0); default -1 */
} peftkit_model_config;

/*
 * Writes the defaults above into the first `size` bytes of *config and sets struct_size = size (see
 * "Structs and versions"; bytes beyond this library's struct are set to 0). Use the macro
 * peftkit_model_config_init(config), which passes sizeof *config.
 * Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT (config NULL, size not a size of the struct).
 */
peftkit_status peftkit_model_config_init_sized(peftkit_model_config *config, size_t size);
#define peftkit_model_config_init(config) peftkit_model_config_init_sized((config), sizeof *(config))

/*
 * Creates a model with random weights (GPT-2-style init: N(0, 0.02), residual projections scaled by
 * 1/sqrt(2 * num_layers)), drawn from `seed`. Equal configs and seeds give bit-identical weights.
 *
 * config  read only, not kept.
 * out     receives the new model on success; set to NULL on failure (if out itself is not NULL).
 *         Free the model with peftkit_model_free.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL pointer, struct_size, a field out of range or
 * inconsistent), PEFTKIT_ERR_OUT_OF_MEMORY, PEFTKIT_ERR_UNSUPPORTED.
 */
peftkit_status peftkit_model_create(const peftkit_model_config *config, uint64_t seed, peftkit_model **out);

/*
 * Loads a Hugging Face model folder: config.json plus model.safetensors (or a sharded index), or a GGUF
 * file of architecture llama when path ends in ".gguf". The tokenizer and chat template are read too when
 * the files carry them (see Tokenization).
 *
 * path    folder or file path, UTF-8; not kept.
 * out     receives the new model on success; set to NULL on failure (if out itself is not NULL).
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_IO, PEFTKIT_ERR_FORMAT,
 * PEFTKIT_ERR_UNSUPPORTED (an architecture or weight type this build does not run),
 * PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_model_load(const char *path, peftkit_model **out);

/* Flags of peftkit_model_load_with. */
/* Widen every GGUF weight to fp32 on load (about 4 bytes per parameter). Without it, GGUF linear weights
 * and the token embedding stay in their blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16),
 * memory-mapped: adapters train and generate over them, but peftkit_adapter_merge and full fine-tuning
 * fail with PEFTKIT_ERR_UNSUPPORTED. No effect on Hugging Face folders (always fp32). */
#define PEFTKIT_LOAD_WIDEN 1

/*
 * As peftkit_model_load, with flags (0 or PEFTKIT_LOAD_WIDEN). peftkit_model_load(path, out) equals
 * peftkit_model_load_with(path, 0, out): GGUF weights stay in their blocks.
 *
 * Returns what peftkit_model_load returns; PEFTKIT_ERR_INVALID_ARGUMENT for an unknown flag bit.
 */
peftkit_status peftkit_model_load_with(const char *path, uint32_t flags, peftkit_model **out);

/*
 * Progress of a long call, called on the thread that made the call, between two pieces of work.
 *
 * done, total  work finished so far and all the work of the call, in the unit the calling function states
 *              (0 <= done <= total, total >= 1; done grows by at least 1 from one call to the next and the
 *              last call has done == total). done / total is the fraction finished.
 * user         the pointer registered with the callback.
 * Return non-zero to go on, 0 to cancel: the call then returns PEFTKIT_ERR_CANCELLED and changes nothing.
 * (Note the sense: peftkit_token_callback returns non-zero to stop; a progress callback returns non-zero to
 * continue, as llama.cpp's progress callbacks do.)
 *
 * Reentrancy: while the callback runs, its model is in use: any call on that model from inside the callback
 * (other than the reads listed under THREAD SAFETY) fails with PEFTKIT_ERR_BUSY. Other models may be used.
 * The callback must not unwind (longjmp, C++ exceptions) through the library.
 */
typedef int32_t (*peftkit_progress_callback)(int64_t done, int64_t total, void *user);

/*
 * Options of peftkit_model_load_ex. An input struct (see "Structs and versions"); defaults set by
 * peftkit_load_config_init: flags 0, no callback.
 */
typedef struct peftkit_load_config {
    uint32_t struct_size;                /* sizeof(peftkit_load_config); set by peftkit_load_config_init */
    uint32_t flags;                      /* 0 or PEFTKIT_LOAD_WIDEN */
    peftkit_progress_callback progress;  /* nullable; called with done/total in weight tensors read */
    void *progress_user;                 /* passed to progress as is */
} peftkit_load_config;

/*
 * Writes the defaults above into the first `size` bytes of *config and sets struct_size = size. Use the macro
 * peftkit_load_config_init(config). Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT.
 */
peftkit_status peftkit_load_config_init_sized(peftkit_load_config *config, size_t size);
#define peftkit_load_config_init(config) peftkit_load_config_init_sized((config), sizeof *(config))

/*
 * As peftkit_model_load_with(path, config->flags, out), calling config->progress (when not NULL) after each
 * weight tensor is read (done / total = tensors read / tensors of the model). A callback returning 0 cancels
 * the load: PEFTKIT_ERR_CANCELLED, *out = NULL, and everything read so far is released.
 *
 * config  nullable (= the defaults); read only, not kept.
 * Returns what peftkit_model_load_with returns, plus PEFTKIT_ERR_CANCELLED.
 */
peftkit_status peftkit_model_load_ex(const char *path, const peftkit_load_config *config, peftkit_model **out);

/*
 * Frees a model and all its adapters. NULL is a no-op. The handle is invalid afterwards. Must not
 * overlap another call on the same model.
 */
void peftkit_model_free(peftkit_model *model);

/*
 * Writes the model's shape into *out with concrete values (no 0 / -1 placeholders).
 *
 * out     out->struct_size must be set (use peftkit_model_config_init first).
 * Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT.
 */
peftkit_status peftkit_model_get_config(const peftkit_model *model, peftkit_model_config *out);

/* ===================================================================================================
 * Adapters
 *
 * Adapter names are non-empty UTF-8 strings, unique within a model. Adapters are listed in attach
 * order. Only the active adapter takes part in training, forward passes and generation; with no active
 * adapter the model is the bare base model.
 * =================================================================================================== */

/*
 * Attaches a new adapter named `name` from `config_json`, the JSON text of an adapter_config.json in the
 * ecosystem's own schema: the same text peftkit_adapter_save writes and peftkit_adapter_load reads. The
 * adapter is not made active: call peftkit_adapter_set_active.
 *
 * LoRA, IA3, prefix and prompt tuning: Hugging Face PEFT's schema. "peft_type" is "LORA", "IA3",
 * "PREFIX_TUNING" or "PROMPT_TUNING"; the other keys are PEFT's field names, so the dict of
 * `peft.LoraConfig(...).to_dict()` (or a saved adapter_config.json) works as is:
 *   LORA           r (required), lora_alpha (default 8), lora_dropout, use_rslora, target_modules (required:
 *                  a list of module names, a regular expression string, or "all-linear"), layers_to_transform
 *                  (an int or a list of layer indices), init_lora_weights (true, "pissa" or "olora": A and B from
 *                  the SVD or QR of each base weight, which is replaced by the residual W - s*B*A while the adapter
 *                  is attached and restored when it is removed; every forward pass, whichever adapter is active,
 *                  runs on the residual meanwhile, as in PEFT. fp32 base weights only; "olora" not on GPT-2's
 *                  Conv1D; "pissa_niter_N" is refused)
 *   IA3            target_modules, feedforward_modules (a subset of target_modules), layers_to_transform
 *   PREFIX_TUNING  num_virtual_tokens, prefix_projection, encoder_hidden_size
 *   PROMPT_TUNING  num_virtual_tokens, prompt_tuning_init ("RANDOM" or "TEXT"), prompt_tuning_init_text
 *                  (tokenized with the model's tokenizer: PEFTKIT_ERR_STATE without one)
 * Module names are the Hugging Face ones (GPT-2: c_attn, attn.c_proj, c_fc, mlp.c_proj; Llama: q_proj,
 * k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).
 * Bottleneck adapters: AdapterHub's schema: a BnConfig dict (mh_adapter, output_adapter, reduction_factor,
 * non_linearity, original_ln_before, ln_before, ln_after, init_weights, scaling, leave_out, ...), the file
 * form {"config": {...}, "name": ..., "hidden_size": ...}, or a preset: {"config": "seq_bn"} ("seq_bn" =
 * "pfeiffer", "double_seq_bn" = "houlsby").
 * PEFTKit's own keys: "seed" (any method: the seed of the initial weights) and "init_token_ids" (prompt
 * tuning: start from these tokens' embeddings).
 * Keys that do not change the computation (base_model_name_or_path, revision, task_type "CAUSAL_LM",
 * inference_mode, ...) are accepted and ignored. A key PEFTKit does not implement, with a value other than
 * its neutral one, fails with PEFTKIT_ERR_UNSUPPORTED and a message naming the key.
 *
 *   LoRA:       {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
 *   bottleneck: {"mh_adapter": false, "output_adapter": true, "reduction_factor": 16,
 *                "non_linearity": "relu", "original_ln_before": true, "leave_out": [0]}
 *
 * name         non-empty UTF-8, not kept.
 * config_json  NUL-terminated UTF-8 JSON object, at most 1 MiB; read during the call only.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL or invalid arguments, a value out of range, targets
 * that match nothing), PEFTKIT_ERR_FORMAT (not a JSON object, a key of the wrong type),
 * PEFTKIT_ERR_UNSUPPORTED (an unknown method or key), PEFTKIT_ERR_STATE (the name is already used; TEXT init
 * without a tokenizer), PEFTKIT_ERR_OUT_OF_MEMORY. On failure nothing is attached.
 */
peftkit_status peftkit_adapter_attach_json(peftkit_model *model, const char *name, const char *config_json);

/*
 * Makes adapter `name` the active one, or deactivates every adapter when name is NULL (the bare base
 * model). Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND.
 */
peftkit_status peftkit_adapter_set_active(peftkit_model *model, const char *name);

/*
 * Removes adapter `name` and frees its weights and optimiser state. If it was active, no adapter is
 * active afterwards. Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND.
 */
peftkit_status peftkit_adapter_remove(peftkit_model *model, const char *name);

/*
 * Number of attached adapters into *out. Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT.
 */
peftkit_status peftkit_adapter_count(const peftkit_model *model, int32_t *out);

/*
 * The name of the adapter at `index` (0 .. count-1, attach order).
 *
 * buf, cap  where to write the name and its NUL. buf may be NULL only when cap is 0: a size query.
 * len_out   nullable; receives the name's length in bytes, without the NUL, both on success and on
 *           PEFTKIT_ERR_BUFFER_TOO_SMALL. A size query (buf NULL, cap 0) returns PEFTKIT_OK.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (index out of range, NULL buf with cap > 0),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL.
 */
peftkit_status peftkit_adapter_name(const peftkit_model *model, int32_t index, char *buf, size_t cap,
                                    size_t *len_out);

/*
 * The name of the active adapter, written like peftkit_adapter_name; "" (length 0) when the base model
 * is active. Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUFFER_TOO_SMALL.
 */
peftkit_status peftkit_adapter_get_active(const peftkit_model *model, char *buf, size_t cap, size_t *len_out);

/*
 * Number of trainable parameters of adapter `name` into *out.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND.
 */
peftkit_status peftkit_adapter_num_params(const peftkit_model *model, const char *name, int64_t *out);

/*
 * The method (PEFTKIT_METHOD_*) of adapter `name` into *out.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND.
 */
peftkit_status peftkit_adapter_method(peftkit_model *model, const char *name, int32_t *out);

/*
 * Tensor access: an adapter's weights under the names and shapes its saved file gives them (PEFT's
 * "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" [r, in], AdapterHub's
 * "transformer.h.0.output_adapters.NAME.adapter_down.0.weight", "prompt_embeddings", ...): what
 * peftkit_adapter_save would write now, in the order it lists them, as fp32. Indices are stable while the
 * adapter stays attached.
 *
 * peftkit_adapter_tensor_count: the number of tensors of adapter `adapter` into *out.
 *
 * peftkit_adapter_tensor_info: tensor `index` (0 .. count-1).
 *   name_buf, name_cap, name_len  its name, written like peftkit_adapter_name (name_buf may be NULL only when
 *                                 name_cap is 0: a size query; name_len nullable).
 *   shape, shape_cap, ndim        its dimensions into shape[0 .. *ndim) (shape nullable when shape_cap is 0;
 *                                 ndim required). At most 4 dimensions; a shape_cap below the tensor's ndim is
 *                                 PEFTKIT_ERR_BUFFER_TOO_SMALL with *ndim set.
 *   writable                      nullable; 1 when peftkit_adapter_tensor_write may change it, 0 when it is
 *                                 derived (a prefix trained with prefix_projection saves its MLP's output).
 *
 * peftkit_adapter_tensor_read: copies tensor `tensor` into buf (count floats, at least its element count, else
 *   PEFTKIT_ERR_BUFFER_TOO_SMALL and nothing written); *n_out (nullable) = its element count.
 *
 * peftkit_adapter_tensor_write: replaces tensor `tensor` with `count` floats from data (count must equal its
 *   element count, row-major as its shape says). Every value must be finite (else PEFTKIT_ERR_INVALID_ARGUMENT
 *   naming the first bad index, and nothing changes). Forward passes, generation and saves see the new values
 *   at once; the adapter's AdamW moments and step count are kept. Not allowed while the adapter is merged
 *   (PEFTKIT_ERR_STATE); a derived tensor is PEFTKIT_ERR_UNSUPPORTED.
 *
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, index out of range, count, non-finite data),
 * PEFTKIT_ERR_NOT_FOUND (no such adapter or tensor), PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_STATE,
 * PEFTKIT_ERR_UNSUPPORTED (the method has no file format; a derived tensor), PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_adapter_tensor_count(peftkit_model *model, const char *adapter, int32_t *out);
peftkit_status peftkit_adapter_tensor_info(peftkit_model *model, const char *adapter, int32_t index, char *name_buf,
                                           size_t name_cap, size_t *name_len, int64_t *shape, int32_t shape_cap,
                                           int32_t *ndim, int32_t *writable);
peftkit_status peftkit_adapter_tensor_read(peftkit_model *model, const char *adapter, const char *tensor, float *buf,
                                           size_t count, size_t *n_out);
peftkit_status peftkit_adapter_tensor_write(peftkit_model *model, const char *adapter, const char *tensor,
                                            const float *data, size_t count);

/*
 * Folds LoRA or IA3 adapter `name` into the base weights. The tensors it touches are copied first (the
 * originals, possibly memory-mapped from the model file, are never written); afterwards the base model
 * computes what the adapter did, the adapter's own hooks are off and it cannot be trained until unmerged.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND, PEFTKIT_ERR_STATE (already
 * merged), PEFTKIT_ERR_UNSUPPORTED (another method), PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_adapter_merge(peftkit_model *model, const char *name);

/*
 * Undoes peftkit_adapter_merge, restoring the original base weights bit for bit. Merges undo in reverse
 * order. Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND, PEFTKIT_ERR_STATE (not
 * merged, or another adapter was merged after it).
 */
peftkit_status peftkit_adapter_unmerge(peftkit_model *model, const char *name);

/*
 * Writes adapter `name` into folder `dir` (created if missing), each file replaced atomically:
 * - bottleneck adapters in AdapterHub's format: adapter_config.json + adapter.safetensors;
 * - LoRA, IA3, prefix and prompt tuning in Hugging Face PEFT's format: adapter_config.json +
 *   adapter_model.safetensors, loadable with peft's PeftModel.from_pretrained. A prefix trained with
 *   prefix_projection is saved as the MLP's output rows (what PEFT saves too): it reloads as a plain
 *   prefix with the same outputs.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND, PEFTKIT_ERR_IO.
 */
peftkit_status peftkit_adapter_save(peftkit_model *model, const char *name, const char *dir);

/* Adapter file formats (peftkit_adapter_save_as). */
/* The method's ecosystem format, a folder: what peftkit_adapter_save writes. */
#define PEFTKIT_ADAPTER_FORMAT_NATIVE 0
/* llama.cpp's GGUF LoRA adapter, one file: what `llama-cli -m base.gguf --lora adapter.gguf` (and Ollama, LM
 * Studio) load. LoRA adapters of Llama models only. Tensors `<base GGUF tensor>.lora_a` (ne [in, r]) and
 * `.lora_b` (ne [r, out], query/key rows in GGUF's RoPE order, as llama.cpp's converter writes them), metadata
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha (rsLoRA written as the equivalent alpha * sqrt(r)). */
#define PEFTKIT_ADAPTER_FORMAT_GGUF 1
/* A LoRA adapter initialised with init_lora_weights "pissa" or "olora" (whose base weights run as the residual
 * W - s*B0*A0 while it is attached) converted to a plain LoRA of the ORIGINAL base, a folder in PEFT's format: rank
 * 2r, lora_A = [A ; A0], lora_B = [B | -B0], lora_alpha doubled (rsLoRA: times sqrt 2), init_lora_weights true (what
 * PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) writes). Any other adapter as NATIVE. */
#define PEFTKIT_ADAPTER_FORMAT_CONVERTED_LORA 2

/*
 * Writes adapter `name` in `format` to `path`: PEFTKIT_ADAPTER_FORMAT_NATIVE as peftkit_adapter_save (path is
 * the folder); PEFTKIT_ADAPTER_FORMAT_GGUF as one file at path, replaced atomically. peftkit_adapter_load reads
 * both back.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, empty path, unknown format), PEFTKIT_ERR_NOT_FOUND,
 * PEFTKIT_ERR_UNSUPPORTED (GGUF: not a LoRA adapter, not a Llama model, lora_alpha 0), PEFTKIT_ERR_IO,
 * PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_adapter_save_as(peftkit_model *model, const char *name, const char *path, int32_t format);

/*
 * Reads an adapter folder written by peftkit_adapter_save, by AdapterHub (bottleneck adapters) or by
 * Hugging Face PEFT (LoRA, rsLoRA, IA3, prefix and prompt tuning of a causal LM; told apart by
 * adapter_model.safetensors), or a llama.cpp GGUF LoRA adapter when `dir` is a file whose name ends in
 * ".gguf" (stored name "default"; alpha absent or 0 means scale 1, as in llama.cpp), and attaches it. It is not made active. PEFT options PEFTKit does not
 * implement (DoRA, bias training, modules_to_save, rank_pattern, ...) give PEFTKIT_ERR_UNSUPPORTED; on an encoder
 * (BERT), modules_to_save ["classifier"] with task_type SEQ_CLS / TOKEN_CLS is read: the adapter is attached with
 * its task head (peftkit_head_attach).
 *
 * dir       folder path, UTF-8.
 * name      the name to attach it under; NULL = the name stored in the folder (AdapterHub), or
 *           "default" (PEFT folders store none).
 * name_out  nullable; receives the name used, NUL-terminated, in name_cap bytes. If it does not fit,
 *           the adapter is not attached (the call has no effect) and PEFTKIT_ERR_BUFFER_TOO_SMALL is
 *           returned. 256 bytes is enough for any name you chose yourself shorter than that.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_IO, PEFTKIT_ERR_FORMAT (malformed, or
 * shaped for another model), PEFTKIT_ERR_STATE (the name is already used), PEFTKIT_ERR_UNSUPPORTED,
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_adapter_load(peftkit_model *model, const char *dir, const char *name, char *name_out,
                                    size_t name_cap);

/*
 * Writes a training checkpoint of adapter `name` into folder `dir` (created if missing): the adapter's
 * method and configuration, its weights, its AdamW moments, its step count and the random state its
 * training draws from (LoRA dropout). Training resumed from it with the same batches and train config
 * gives bit-identical losses and weights to a run that never stopped. The folder's manifest
 * (checkpoint.json) is replaced last and atomically: a crash at any moment leaves the previous checkpoint
 * or the new one, complete. The folder also holds the adapter in its portable format (adapter-<tag>/, for
 * peftkit_adapter_load) when the method can be saved. One writer per folder at a time.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_NOT_FOUND, PEFTKIT_ERR_IO,
 * PEFTKIT_ERR_NUMERICAL (the adapter holds NaN or infinity: nothing written, an older checkpoint in `dir`
 * stays as it was), PEFTKIT_ERR_UNSUPPORTED.
 */
peftkit_status peftkit_checkpoint_save(peftkit_model *model, const char *name, const char *dir);

/*
 * Reads a checkpoint written by peftkit_checkpoint_save and attaches its adapter, with its optimiser state,
 * under the name stored in it. It is not made active.
 *
 * name_out  nullable; receives the adapter's name, NUL-terminated, in name_cap bytes. If it does not fit,
 *           the adapter is not attached (the call has no effect) and PEFTKIT_ERR_BUFFER_TOO_SMALL is
 *           returned.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_IO (no checkpoint in dir), PEFTKIT_ERR_FORMAT
 * (malformed or modified files, or a checkpoint of a model of another shape), PEFTKIT_ERR_NUMERICAL,
 * PEFTKIT_ERR_STATE (the name is already used), PEFTKIT_ERR_UNSUPPORTED (a newer checkpoint version),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_checkpoint_load(peftkit_model *model, const char *dir, char *name_out, size_t name_cap);

/* ===================================================================================================
 * Training and evaluation
 * =================================================================================================== */

/*
 * Optimiser settings. Defaults set by peftkit_train_config_init equal the Swift API's TrainConfig()
 * (PyTorch AdamW): learning_rate 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01, CONSTANT
 * schedule, no warm-up, total_steps 0, no clipping, no micro-batching, lora_plus_ratio 0, no gradient
 * checkpointing, activation_memory AUTO. A struct_size that ends at micro_batch_size (the layout before lora_plus_ratio) stays
 * accepted: the fields after it take their defaults.
 */
typedef struct peftkit_train_config {
    uint32_t struct_size;     /* sizeof(peftkit_train_config); set by peftkit_train_config_init */
    float learning_rate;      /* finite, >= 0 */
    float beta1;              /* [0, 1) */
    float beta2;              /* [0, 1) */
    float eps;                /* finite, > 0 */
    float weight_decay;       /* decoupled (AdamW); finite, >= 0 */
    int32_t schedule;         /* PEFTKIT_SCHEDULE_* */
    int32_t warmup_steps;     /* >= 0 */
    int32_t total_steps;      /* length of LINEAR/COSINE schedules; >= 0 */
    float max_grad_norm;      /* clip the global gradient L2 norm to this; 0 = no clipping */
    int32_t micro_batch_size; /* at most this many rows per micro-batch for gradient accumulation; 0 = whole
                                 batch. batch B runs as K = ceil(B / micro_batch_size) near-equal parts,
                                 part k = rows [k*B/K, (k+1)*B/K). The gradient is the full batch's either
                                 way (up to float rounding); only memory use changes. */
    float lora_plus_ratio;    /* LoRA+: LoRA's B matrices (and DoRA magnitudes) train at this times the
                                 learning rate; 0 = the adapter's own "loraplus_lr_ratio", else off. Finite,
                                 >= 0; ignored by other methods. (Since 0.2; default 0.) */
    int32_t gradient_checkpointing; /* 1 = keep only each layer's input and recompute its activations in
                                 the backward (same gradients, less memory, one more forward); 0 = off.
                                 (Since 0.2; default 0.) */
    int32_t activation_memory; /* PEFTKIT_ACTIVATIONS_*: what each layer keeps when not checkpointing; same
                                 gradients either way. (Since 0.2; default AUTO = 0.) */
} peftkit_train_config;

/*
 * Writes the defaults above into the first `size` bytes of *config and sets struct_size = size (see
 * "Structs and versions"; bytes beyond this library's struct are set to 0). Use the macro
 * peftkit_train_config_init(config), which passes sizeof *config.
 * Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT (config NULL, size not a size of the struct).
 */
peftkit_status peftkit_train_config_init_sized(peftkit_train_config *config, size_t size);
#define peftkit_train_config_init(config) peftkit_train_config_init_sized((config), sizeof *(config))

/*
 * What one optimiser step did. This struct is written by the library; before the call set
 * struct_size = sizeof(peftkit_train_result) so that the library knows which layout you compiled with.
 */
typedef struct peftkit_train_result {
    uint32_t struct_size;     /* set by the caller: sizeof(peftkit_train_result) */
    float loss;               /* mean cross-entropy over counted tokens, before the update */
    float grad_norm;          /* global gradient L2 norm, before clipping */
    float learning_rate;      /* learning rate used for this step */
    int64_t step;             /* optimiser steps taken by this adapter so far, including this one */
    int64_t tokens;           /* label positions that counted towards the loss */
} peftkit_train_result;

/*
 * Turns full fine-tuning on (enabled != 0) or off. While on, peftkit_train_step trains every base weight
 * (embeddings, norms, linear weights and biases) with AdamW instead of an adapter, and no adapter may be
 * active. Turning it on copies the base weights into memory owned by the model (a loaded file is never
 * written) and allocates their gradients and AdamW moments: about 4x the model's fp32 size in all. Turning
 * it off frees the gradients and moments; the trained weights stay. Turning it on twice does nothing.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_STATE (an adapter is merged),
 * PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_model_set_full_finetuning(peftkit_model *model, int32_t enabled);

/* Whole-model file formats (peftkit_model_save). */
/* A Hugging Face model folder: config.json + model.safetensors (F32, transformers' tensor names and layouts:
 * GPT2LMHeadModel, LlamaForCausalLM / Qwen2ForCausalLM, BertModel), plus the tokenizer files of the folder the
 * model was loaded from (tokenizer.json, tokenizer_config.json, vocab.json, merges.txt, chat_template.jinja, ...);
 * a model loaded from GGUF gets its chat template as chat_template.jinja and no tokenizer files. */
#define PEFTKIT_MODEL_FORMAT_HF 0
/* One GGUF file of architecture "llama" that llama.cpp loads, matrices in F32 (..._GGUF_F32) or F16 (..._GGUF_F16;
 * norms and biases stay F32), query/key rows in GGUF's RoPE order, the tokenizer metadata of the GGUF file the
 * model's tokenizer came from carried over. Llama models only. A tokenizer read from Hugging Face files is
 * refused (PEFTKIT_ERR_UNSUPPORTED); a model without a tokenizer is written without one. */
#define PEFTKIT_MODEL_FORMAT_GGUF_F32 1
#define PEFTKIT_MODEL_FORMAT_GGUF_F16 2

/*
 * Writes the whole model as it computes with no adapter active: merged adapters (peftkit_adapter_merge) and fully
 * fine-tuned weights (peftkit_model_set_full_finetuning) included; weights kept in GGUF blocks are widened to fp32
 * as they are written. peftkit_model_load reads the result back.
 *
 * path    UTF-8: the folder (PEFTKIT_MODEL_FORMAT_HF, created if missing; its files are replaced together, so a
 *         failed or interrupted save leaves the old files) or the file (GGUF, replaced atomically; its folder
 *         must exist).
 * format  a PEFTKIT_MODEL_FORMAT_* value.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, empty path, unknown format, a weight beyond F16's range
 * for ..._GGUF_F16), PEFTKIT_ERR_STATE (an adapter is active and not merged), PEFTKIT_ERR_UNSUPPORTED (GGUF of a
 * model that is not Llama, or whose tokenizer has no GGUF form), PEFTKIT_ERR_IO (the path cannot be written;
 * nothing is left behind), PEFTKIT_ERR_OUT_OF_MEMORY, PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_model_save(peftkit_model *model, const char *path, int32_t format);

/*
 * One optimiser step of the active adapter on `batch` rows of `seq_len` tokens. The base weights are
 * never changed, except under full fine-tuning (peftkit_model_set_full_finetuning), where they are what
 * the step trains.
 *
 * input_ids  batch * seq_len token ids, row-major; read only.
 * labels     batch * seq_len labels (token ids or PEFTKIT_IGNORE_INDEX), or NULL to use input_ids.
 * batch, seq_len  both >= 1.
 * config     read only.
 * out        nullable; set on success (out->struct_size must be set by the caller).
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, sizes, ids or labels out of range, config),
 * PEFTKIT_ERR_STATE (no active adapter; or one is active under full fine-tuning), PEFTKIT_ERR_NUMERICAL (NaN/Inf loss or gradient; nothing
 * updated), PEFTKIT_ERR_OUT_OF_MEMORY.
 */
peftkit_status peftkit_train_step(peftkit_model *model, const int32_t *input_ids, const int32_t *labels,
                                  int32_t batch, int32_t seq_len, const peftkit_train_config *config,
                                  peftkit_train_result *out);

/*
 * The train step in two halves, for hosts that combine gradients across processes (data parallelism with their
 * own communicator: MPI, torch.distributed, ...). peftkit_train_step is exactly compute then apply.
 *
 * peftkit_train_compute_gradients: forward, loss and backward over the batch (arguments as peftkit_train_step),
 * leaving in the flat gradient buffer (peftkit_train_gradients) the gradient of the summed loss divided by
 * `loss_divisor`: 0 means this batch's counted tokens (the mean loss); data-parallel ranks pass the global count
 * of counted tokens so that the sum of their buffers is the gradient of the global mean. *loss_out (nullable)
 * gets this batch's summed loss divided by the same divisor, *tokens_out (nullable) the tokens it counted.
 * Returns as peftkit_train_step; PEFTKIT_ERR_NUMERICAL leaves the buffer zeroed and nothing else changed.
 *
 * peftkit_train_apply_gradients: clipping, learning-rate schedule and AdamW on the buffer as it is now, with
 * peftkit_train_step's refusal of non-finite values (PEFTKIT_ERR_NUMERICAL: no weight, moment or step changes).
 * PEFTKIT_ERR_STATE when no compute call for the adapter being trained precedes it (or it was used already).
 * out->loss is the compute call's loss, out->tokens its tokens.
 *
 * peftkit_train_gradients: *data = the flat fp32 gradient buffer of what peftkit_train_step trains (the active
 * adapter's parameters, or every base weight under full fine-tuning), *count = its length in floats. The pointer
 * stays valid until that adapter is removed or given a task head (peftkit_head_attach), full fine-tuning is
 * switched, or the model is freed. Read or write
 * it between compute and apply, never while another call runs on the model.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL), PEFTKIT_ERR_STATE (nothing to train).
 */
peftkit_status peftkit_train_compute_gradients(peftkit_model *model, const int32_t *input_ids, const int32_t *labels,
                                               int32_t batch, int32_t seq_len, const peftkit_train_config *config,
                                               int64_t loss_divisor, float *loss_out, int64_t *tokens_out);

/*
 * Packed rows (several records per row): peftkit_train_step, peftkit_train_compute_gradients and
 * peftkit_forward with segment ids. segment_ids (nullable = the plain call) holds batch * seq_len ids, row-major:
 * a record starts at position 0 of a row and wherever the id differs from the previous position's (e.g.
 * 0 0 0 1 1 2 2 2; padding after the last record can be a segment of its own). Each record attends only to
 * itself, its positions start at 0 and no position predicts across a record boundary, so loss, gradients and
 * logits equal those of the records run one by one. Read only, during the call.
 * Returns as the plain calls, plus PEFTKIT_ERR_UNSUPPORTED with segment ids on an encoder (BERT) or with a
 * prompt- or prefix-tuning adapter active (their virtual tokens belong to one sequence; nothing changes).
 */
peftkit_status peftkit_train_step_packed(peftkit_model *model, const int32_t *input_ids, const int32_t *labels,
                                         const int32_t *segment_ids, int32_t batch, int32_t seq_len,
                                         const peftkit_train_config *config, peftkit_train_result *out);
peftkit_status peftkit_train_compute_gradients_packed(peftkit_model *model, const int32_t *input_ids,
                                                      const int32_t *labels, const int32_t *segment_ids, int32_t batch,
                                                      int32_t seq_len, const peftkit_train_config *config,
                                                      int64_t loss_divisor, float *loss_out, int64_t *tokens_out);
peftkit_status peftkit_forward_packed(peftkit_model *model, const int32_t *input_ids, const int32_t *labels,
                                      const int32_t *segment_ids, int32_t batch, int32_t seq_len, float *logits,
                                      size_t logits_capacity, float *loss_out, int64_t *tokens_out);
peftkit_status peftkit_train_apply_gradients(peftkit_model *model, const peftkit_train_config *config,
                                             peftkit_train_result *out);
peftkit_status peftkit_train_gradients(peftkit_model *model, float **data, int64_t *count);

/*
 * Preference tuning: one optimiser step of the active adapter on `pairs` preference pairs.
 *
 * objective        PEFTKIT_OBJECTIVE_DPO: loss = -log sigmoid(beta * ((log p(c) - log p_ref(c)) - (log p(r) -
 *                  log p_ref(r)))), log p(y) summed over the response tokens, p_ref = the model with the adapter
 *                  turned off (one more forward pass; needs an active adapter). beta > 0.
 *                  PEFTKIT_OBJECTIVE_ORPO: loss = NLL(chosen) - beta * mean log sigmoid(log odds(c) - log odds(r)),
 *                  odds = p / (1 - p) with p = exp(mean log-probability of the response tokens); beta is the paper's
 *                  lambda (TRL's `beta`), >= 0. Both are means over the pairs.
 * chosen_ids, rejected_ids      pairs * seq_len token ids each, row-major (prompt then response, right-padded).
 * chosen_mask, rejected_mask    pairs * seq_len values, 1 on response tokens (their log-probability counts),
 *                  0 on prompt and padding; position 0 of a row never counts. Every row needs a counted token.
 * config           as for peftkit_train_step; micro_batch_size counts pairs.
 * out              nullable; loss = the preference loss, tokens = response tokens counted (chosen + rejected).
 * stats            nullable; receives min(stats_capacity, PEFTKIT_PREFERENCE_STATS) floats in this order (means
 *                  over the pairs; later versions only append): loss, chosen reward, rejected reward, reward margin,
 *                  accuracy (share of pairs with chosen reward > rejected), log p(chosen), log p(rejected), ORPO's
 *                  NLL term (0 for DPO), ORPO's mean log sigmoid(log odds ratio) (0 for DPO). Rewards are
 *                  beta * (log p - log p_ref) for DPO and beta * mean log-probability for ORPO (TRL's convention).
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, sizes, ids, masks not 0/1, a row without a counted token,
 * objective or beta, config), PEFTKIT_ERR_STATE (no active adapter for DPO), PEFTKIT_ERR_BUSY,
 * PEFTKIT_ERR_NUMERICAL (NaN/Inf loss, gradient or update; nothing changed), PEFTKIT_ERR_OUT_OF_MEMORY.
 */
#define PEFTKIT_OBJECTIVE_DPO 1
#define PEFTKIT_OBJECTIVE_ORPO 2
#define PEFTKIT_PREFERENCE_STATS 9
peftkit_status peftkit_train_preference_step(peftkit_model *model, int32_t objective, float beta,
                                             const int32_t *chosen_ids, const int32_t *chosen_mask,
                                             const int32_t *rejected_ids, const int32_t *rejected_mask,
                                             int32_t pairs, int32_t seq_len, const peftkit_train_config *config,
                                             peftkit_train_result *out, float *stats, int32_t stats_capacity);

/*
 * Registers a progress callback for the model's training calls (peftkit_train_step and
 * peftkit_train_compute_gradients), replacing any earlier one; cb NULL removes it. It is called on the calling
 * thread after the forward pass of each micro-batch and after the backward pass through each layer (done /
 * total in those units, over all micro-batches of the call). Returning 0 cancels the call:
 * PEFTKIT_ERR_CANCELLED, with the adapter's weights, AdamW moments, step count and random state unchanged and the
 * gradient buffer zeroed (a following peftkit_train_apply_gradients fails with PEFTKIT_ERR_STATE).
 * Calls on the model from inside the callback fail with PEFTKIT_ERR_BUSY (see peftkit_progress_callback).
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_model_set_progress_callback(peftkit_model *model, peftkit_progress_callback cb, void *user);

/*
 * A forward pass with the active adapter (or the base model), without any update.
 *
 * input_ids        batch * seq_len token ids, row-major.
 * labels           nullable; as for peftkit_train_step (NULL = input_ids).
 * logits           nullable; receives batch * seq_len * vocab_size floats, row-major
 *                  [batch][seq_len][vocab_size]. When NULL, logits_capacity is ignored.
 * logits_capacity  size of logits in floats. If smaller than batch * seq_len * vocab_size, the call
 *                  returns PEFTKIT_ERR_BUFFER_TOO_SMALL before computing anything.
 * loss_out         nullable; mean cross-entropy over counted label positions (0 when none counted).
 * tokens_out       nullable; number of label positions that counted.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUFFER_TOO_SMALL,
 * PEFTKIT_ERR_OUT_OF_MEMORY (including logits given and batch * seq_len * vocab_size overflowing),
 * PEFTKIT_ERR_NUMERICAL (NaN or infinity in the loss; logits, when given, then hold what was computed).
 */
peftkit_status peftkit_forward(peftkit_model *model, const int32_t *input_ids, const int32_t *labels, int32_t batch,
                               int32_t seq_len, float *logits, size_t logits_capacity, float *loss_out,
                               int64_t *tokens_out);

/*
 * peftkit_forward where row b of the batch runs with adapter adapters[b] (NULL entry = the base model):
 * one batch serves several tasks. Row b's logits equal what it gets alone with that adapter active. The
 * active adapter is unchanged afterwards.
 *
 * adapters  batch entries, each NULL or an attached adapter's name; read during the call only.
 * Other parameters and statuses as peftkit_forward, plus PEFTKIT_ERR_NOT_FOUND for an unknown name.
 */
peftkit_status peftkit_forward_mixed(peftkit_model *model, const int32_t *input_ids, const int32_t *labels,
                                     const char *const *adapters, int32_t batch, int32_t seq_len, float *logits,
                                     size_t logits_capacity, float *loss_out, int64_t *tokens_out);

/* Which logits peftkit_forward_ex writes (peftkit_forward_options.logits_mode). */
/* Every position: batch * seq_len * vocab_size floats, [batch][seq_len][vocab_size]. */
#define PEFTKIT_LOGITS_ALL 0
/* The last position of each row only: batch * vocab_size floats, [batch][vocab_size]. */
#define PEFTKIT_LOGITS_LAST 1
/* None; `logits` must be NULL. */
#define PEFTKIT_LOGITS_NONE 2

/*
 * Outputs of peftkit_forward_ex. An input struct (see "Structs and versions": the pointers are the caller's
 * buffers, read during the call only); defaults set by peftkit_forward_options_init: ALL, every pointer NULL.
 */
typedef struct peftkit_forward_options {
    uint32_t struct_size;    /* sizeof(peftkit_forward_options); set by peftkit_forward_options_init */
    int32_t logits_mode;     /* PEFTKIT_LOGITS_* */
    float *logits;           /* nullable; receives the logits logits_mode names */
    size_t logits_capacity;  /* size of logits in floats; smaller than needed is PEFTKIT_ERR_BUFFER_TOO_SMALL */
    float *token_logprobs;   /* nullable; batch * seq_len floats: [b][t] = log p(labels[b][t] | the tokens before
                                t), the log-softmax of the logits at t - 1 at the label (labels shifted as for the
                                loss); 0 where the label does not count (-100, and t = 0 unless the adapter adds
                                virtual tokens, whose last one scores t = 0) */
    float *row_losses;       /* nullable; batch floats: each row's mean cross-entropy (0 when none counted) */
    int64_t *row_tokens;     /* nullable; batch entries: each row's counted label positions */
} peftkit_forward_options;

/*
 * Writes the defaults above into the first `size` bytes of *options and sets struct_size = size. Use the macro
 * peftkit_forward_options_init(options). Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT.
 */
peftkit_status peftkit_forward_options_init_sized(peftkit_forward_options *options, size_t size);
#define peftkit_forward_options_init(options) peftkit_forward_options_init_sized((options), sizeof *(options))

/*
 * peftkit_forward with more outputs, for hosts that score candidates: per-token log-probabilities of the labels,
 * per-row losses, and the logits of every position, of the last one only, or none (a 2048-token row over a
 * 49152-token vocabulary is 400 MB of logits; its last position 192 KB). The mean loss is the token-weighted mean
 * of the row losses. With LAST or NONE and no loss output asked for (loss_out, token_logprobs, row_losses and
 * row_tokens all NULL), the LM head runs on the last position of each row only.
 *
 * options  nullable (= peftkit_forward: ALL with no buffer, i.e. no logits); read only.
 * loss_out, tokens_out  nullable, as for peftkit_forward.
 * Returns as peftkit_forward (PEFTKIT_ERR_INVALID_ARGUMENT also for an unknown logits_mode, or logits given with
 * NONE).
 */
peftkit_status peftkit_forward_ex(peftkit_model *model, const int32_t *input_ids, const int32_t *labels, int32_t batch,
                                  int32_t seq_len, const peftkit_forward_options *options, float *loss_out,
                                  int64_t *tokens_out);

/* ===================================================================================================
 * Generation
 * =================================================================================================== */

/*
 * Sampling settings. Defaults set by peftkit_generate_config_init equal the Swift API's GenerateConfig():
 * max_new_tokens 32, temperature 0 (greedy), top_k 0 (off), top_p 1 (off), seed 0, no stop tokens,
 * repetition_penalty 1 (off), min_p 0 (off), no stop strings.
 *
 * Order of sampling: repetition penalty (also applied when greedy) -> temperature -> top_k -> top_p ->
 * min_p -> a draw (transformers' order).
 *
 * Stop strings: generation stops when the raw bytes of the new tokens (the prompt not included) contain
 * one of stop_strings. The output then ends before the match: out_tokens keeps the tokens that lie wholly
 * before the stop string's first byte; the token in which it starts and any later one are dropped (the
 * token callback has seen them; peftkit_generate_ex reports them, see peftkit_generate_result). The
 * earliest match wins (lowest byte offset, then lowest index). Needs the model's tokenizer
 * (PEFTKIT_ERR_STATE without one).
 */
typedef struct peftkit_generate_config {
    uint32_t struct_size;         /* sizeof(peftkit_generate_config); set by peftkit_generate_config_init */
    int32_t max_new_tokens;       /* tokens to produce at most, prompt not counted; >= 0 */
    float temperature;            /* 0 = greedy (argmax); otherwise logits / temperature are sampled */
    int32_t top_k;                /* keep the k most likely tokens; 0 = off */
    float top_p;                  /* keep the smallest set reaching probability p; (0, 1], 1 = off */
    int32_t n_stop_tokens;        /* number of entries in stop_tokens, >= 0 */
    uint64_t seed;                /* sampler seed: equal seeds give equal outputs */
    const int32_t *stop_tokens;   /* generation ends after emitting any of these (the stop token is
                                     included in the output); read during the call only. May be NULL
                                     when n_stop_tokens is 0 */
    /* Fields below were added in C ABI 0.2; a config of the earlier size (ending at stop_tokens) is still
       accepted and gets their defaults. */
    float repetition_penalty;     /* > 0; 1 = off, and 0 also means off. Logits of tokens already in the
                                     window are divided by it when positive, multiplied when negative.
                                     Window: the whole context, every prompt token and every new token so
                                     far (each distinct token once), as transformers' repetition_penalty */
    float min_p;                  /* [0, 1], 0 = off: drop tokens whose probability is below min_p times the
                                     most likely one's (after temperature, top_k, top_p) */
    int32_t n_stop_strings;       /* number of entries in stop_strings, 0..1024 */
    int32_t reserved0;            /* must be 0 (keeps stop_strings at an 8-byte boundary) */
    const char *const *stop_strings; /* n_stop_strings non-empty NUL-terminated UTF-8 strings (each at most
                                     4096 bytes), see "Stop strings" above; read during the call only. May
                                     be NULL when n_stop_strings is 0 */
} peftkit_generate_config;

/*
 * Writes the defaults above into the first `size` bytes of *config and sets struct_size = size (see
 * "Structs and versions"; bytes beyond this library's struct are set to 0). Use the macro
 * peftkit_generate_config_init(config), which passes sizeof *config.
 * Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT (config NULL, size not a size of the struct).
 */
peftkit_status peftkit_generate_config_init_sized(peftkit_generate_config *config, size_t size);
#define peftkit_generate_config_init(config) peftkit_generate_config_init_sized((config), sizeof *(config))

/*
 * Called once per generated token, on the thread that called peftkit_generate, before generation
 * continues. Return 0 to continue, non-zero to stop (the token just passed is kept in the output).
 * `user` is the pointer given to peftkit_generate. The callback must not call PEFTKit functions on the
 * model that is generating (they fail with PEFTKIT_ERR_BUSY), except the tokenizer reads listed under
 * Tokenization (peftkit_detokenize...); other models are fine.
 */
typedef int32_t (*peftkit_token_callback)(int32_t token, void *user);

/*
 * Generates up to config->max_new_tokens tokens after `prompt` with the active adapter (or the base
 * model).
 *
 * prompt        n_prompt token ids, n_prompt >= 1.
 * config        read only (as is config->stop_tokens).
 * out_tokens    receives the new tokens (prompt not included). May be NULL only with out_capacity 0;
 *               the tokens are then seen only through the callback.
 * out_capacity  size of out_tokens in tokens. If out_tokens is not NULL and out_capacity is smaller than
 *               config->max_new_tokens, the call returns PEFTKIT_ERR_BUFFER_TOO_SMALL before generating.
 * n_out         nullable; receives the number of new tokens on success.
 * cb, user      nullable callback, see peftkit_token_callback.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (including a prompt longer than the model allows),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_OUT_OF_MEMORY, PEFTKIT_ERR_NUMERICAL (NaN or infinity in the
 * logits; tokens already passed to the callback stay passed, out_tokens is not written).
 */
peftkit_status peftkit_generate(peftkit_model *model, const int32_t *prompt, int32_t n_prompt,
                                const peftkit_generate_config *config, int32_t *out_tokens, int32_t out_capacity,
                                int32_t *n_out, peftkit_token_callback cb, void *user);

/* Why generation stopped (peftkit_generate_result.finish_reason). */
/* The last token is one of stop_tokens (it is in the output). */
#define PEFTKIT_FINISH_STOP_TOKEN 1
/* The text contained one of stop_strings (the output ends before it). */
#define PEFTKIT_FINISH_STOP_STRING 2
/* max_new_tokens tokens were produced. */
#define PEFTKIT_FINISH_LENGTH 3
/* The model's max_positions was reached before max_new_tokens. */
#define PEFTKIT_FINISH_CONTEXT_FULL 4
/* The token callback returned non-zero (that token is kept). */
#define PEFTKIT_FINISH_CANCELLED 5

/*
 * What peftkit_generate_ex reports besides the tokens (an output struct: set struct_size = sizeof before
 * the call; see "Structs and versions").
 */
typedef struct peftkit_generate_result {
    uint32_t struct_size;     /* set by the caller: sizeof(peftkit_generate_result) */
    int32_t finish_reason;    /* PEFTKIT_FINISH_* */
    int32_t n_tokens;         /* the output: out_tokens[0 .. n_tokens) */
    int32_t n_generated;      /* tokens written to out_tokens: n_tokens plus, after a stop string, the tokens
                                 it dropped (out_tokens[n_tokens .. n_generated)); every token the callback saw */
    int32_t stop_index;       /* index in stop_tokens (STOP_TOKEN) or stop_strings (STOP_STRING); else -1 */
    int32_t stop_byte_offset; /* STOP_STRING: where the stop string starts in the bytes of out_tokens[0 ..
                                 n_generated) (peftkit_token_to_piece of each, concatenated): the text
                                 before the stop string is that many bytes. Else -1 */
} peftkit_generate_result;

/*
 * peftkit_generate that also says why generation stopped, and with stop strings, what they dropped.
 * A new name rather than a changed peftkit_generate, so that programs built against the old signature keep
 * working (sqlite3_prepare_v2 style); the result is a versioned output struct, so later outputs can be
 * appended to it without a third function (llama.h style).
 *
 * Arguments as peftkit_generate, except:
 * result        required; receives the result on success (see peftkit_generate_result). Its struct_size
 *               is checked before generating.
 * Returns as peftkit_generate, plus PEFTKIT_ERR_STATE (stop strings without a tokenizer).
 */
peftkit_status peftkit_generate_ex(peftkit_model *model, const int32_t *prompt, int32_t n_prompt,
                                   const peftkit_generate_config *config, int32_t *out_tokens, int32_t out_capacity,
                                   peftkit_generate_result *result, peftkit_token_callback cb, void *user);

/*
 * Generates for `batch` prompts, row b with adapter adapters[b] (NULL entry = the base model): one call
 * serves several tasks. Row b's tokens equal what peftkit_generate gives for prompts[b] alone with that
 * adapter active and the same config (each row's sampler starts from config->seed). Rows with the same
 * adapter and the same prompt length are decoded together, one forward pass per step for all of them
 * (as peftkit_forward_mixed groups rows by adapter); other rows run alone. The active adapter is unchanged
 * afterwards.
 *
 * prompts       batch pointers; prompts[b] holds n_prompts[b] >= 1 token ids. Read during the call only.
 * adapters      batch entries, each NULL or an attached adapter's name; read during the call only.
 * out_tokens    receives row b's new tokens at out_tokens[b * config->max_new_tokens ...].
 * out_capacity  size of out_tokens in tokens; at least batch * config->max_new_tokens, else
 *               PEFTKIT_ERR_BUFFER_TOO_SMALL before generating.
 * n_out         batch entries: the number of new tokens of each row (rows may stop early).
 * Returns as peftkit_generate, plus PEFTKIT_ERR_NOT_FOUND for an unknown adapter name. On an error no
 * row's output is written.
 */
peftkit_status peftkit_generate_mixed(peftkit_model *model, const int32_t *const *prompts, const int32_t *n_prompts,
                                      const char *const *adapters, int32_t batch,
                                      const peftkit_generate_config *config, int32_t *out_tokens,
                                      size_t out_capacity, int32_t *n_out);

/*
 * peftkit_generate_mixed that also says why each row stopped.
 *
 * Arguments as peftkit_generate_mixed, plus:
 * finish_reasons  required; batch entries, receives each row's PEFTKIT_FINISH_* on success.
 */
peftkit_status peftkit_generate_mixed_ex(peftkit_model *model, const int32_t *const *prompts,
                                         const int32_t *n_prompts, const char *const *adapters, int32_t batch,
                                         const peftkit_generate_config *config, int32_t *out_tokens,
                                         size_t out_capacity, int32_t *n_out, int32_t *finish_reasons);

/*
 * The raw bytes of one token, for printing generated text as it comes: a byte-level BPE token's bytes,
 * which may start or end inside a multi-byte UTF-8 character. Concatenate pieces and print only complete
 * characters (or use peftkit_detokenize on the whole sequence). Special tokens give their text.
 *
 * token          an id in [0, vocab_size of the tokenizer).
 * out            receives the bytes (no NUL is added: this is a byte string, not text); may be NULL only
 *                when capacity is 0 (a size query).
 * capacity       size of out in bytes.
 * n_out          required; receives the number of bytes, on success and on PEFTKIT_ERR_BUFFER_TOO_SMALL.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, an id outside the vocabulary),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_STATE (no tokenizer).
 * May be called while the model generates (a tokenizer read, see Tokenization).
 */
peftkit_status peftkit_token_to_piece(const peftkit_model *model, int32_t token, char *out, size_t capacity,
                                      size_t *n_out);
/* ===================================================================================================
 * Encoders (BERT): hidden states, sentence embeddings, task heads
 *
 * These take a model whose architecture is PEFTKIT_ARCH_BERT (PEFTKIT_ERR_UNSUPPORTED otherwise) and run it
 * with the active adapter (or none). Besides input_ids (batch * seq_len ids, row-major) each takes:
 *   token_type_ids  nullable; batch * seq_len segment ids, each in 0 ..< type_vocab_size (NULL = all 0).
 *   attention_mask  nullable; batch * seq_len entries, each 0 or 1, at least one 1 per row (NULL = no
 *                   padding). Positions with 0 are padding: no other position attends to them, so a row's
 *                   real positions get the same result whatever the padding and its ids.
 * All three are read during the call only. Bad values give PEFTKIT_ERR_INVALID_ARGUMENT naming the entry.
 * =================================================================================================== */

/*
 * The last layer's hidden states, [batch][seq_len][hidden_size] floats into out (out_capacity floats; fewer
 * than needed gives PEFTKIT_ERR_BUFFER_TOO_SMALL before anything runs).
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_UNSUPPORTED
 * (not an encoder, or an adapter with virtual tokens), PEFTKIT_ERR_OUT_OF_MEMORY, PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_encoder_hidden_states(peftkit_model *model, const int32_t *input_ids,
                                             const int32_t *token_type_ids, const int32_t *attention_mask,
                                             int32_t batch, int32_t seq_len, float *out, size_t out_capacity);

/*
 * Sentence embeddings, [batch][hidden_size] floats: the mean of the hidden states over the unmasked
 * positions, scaled to unit L2 norm when normalize is 1 (what sentence-transformers computes for
 * all-MiniLM-L6-v2). normalize is 0 or 1. Other arguments and statuses as peftkit_encoder_hidden_states.
 */
peftkit_status peftkit_encoder_embed(peftkit_model *model, const int32_t *input_ids, const int32_t *token_type_ids,
                                     const int32_t *attention_mask, int32_t batch, int32_t seq_len,
                                     int32_t normalize, float *out, size_t out_capacity);

/* Task heads (peftkit_head_attach). */
/* Sequence classification: the pooler's output (mean pooling without a pooler), a linear layer, cross-entropy
   on one label per row (transformers' BertForSequenceClassification). */
#define PEFTKIT_HEAD_CLASSIFICATION 1
/* Sequence regression: the same features and layer, mean squared error on `outputs` float targets per row. */
#define PEFTKIT_HEAD_REGRESSION 2
/* Token classification: each position's hidden state, a linear layer, cross-entropy on one label per
   position (BertForTokenClassification). */
#define PEFTKIT_HEAD_TOKENS 3

/*
 * Gives the active adapter a task head of `kind` (PEFTKIT_HEAD_*) with `outputs` outputs (classes, or values
 * for regression; 1 ..= 65536), replacing any head it had. Weights N(0, 0.02) drawn from `seed`, bias 0. The
 * head belongs to that adapter (PEFT's modules_to_save): it trains with it in one optimiser state (the pointer
 * of peftkit_train_gradients changes: ask again) and is saved with it.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (kind, outputs), PEFTKIT_ERR_STATE (no active adapter),
 * PEFTKIT_ERR_UNSUPPORTED (not an encoder), PEFTKIT_ERR_OUT_OF_MEMORY, PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_head_attach(peftkit_model *model, int32_t kind, int32_t outputs, uint64_t seed);

/*
 * The active adapter's head: *kind = PEFTKIT_HEAD_* and *outputs its number of outputs, or both 0 when there
 * is no active adapter or it has no head. kind and outputs must not be NULL.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUSY.
 */
peftkit_status peftkit_head_get(peftkit_model *model, int32_t *kind, int32_t *outputs);

/*
 * The active adapter's head outputs: [batch][outputs] floats (classification logits, regression values), or
 * [batch][seq_len][outputs] (token logits), into out (nullable; out_capacity floats, fewer than needed gives
 * PEFTKIT_ERR_BUFFER_TOO_SMALL). With labels or targets also the mean loss into *loss_out (nullable):
 *   labels   nullable; classification: batch labels, tokens: batch * seq_len labels, each in 0 ..< outputs or
 *            PEFTKIT_IGNORE_INDEX. NULL for regression.
 *   targets  nullable; regression: batch * outputs finite floats. NULL for the other kinds.
 * Nothing is trained. Returns as peftkit_encoder_hidden_states, plus PEFTKIT_ERR_STATE (no active adapter or
 * no head).
 */
peftkit_status peftkit_head_forward(peftkit_model *model, const int32_t *input_ids, const int32_t *token_type_ids,
                                    const int32_t *attention_mask, int32_t batch, int32_t seq_len,
                                    const int32_t *labels, const float *targets, float *out, size_t out_capacity,
                                    float *loss_out);

/*
 * One optimiser step of the active adapter and its head together on labels (classification, tokens) or
 * targets (regression), as in peftkit_head_forward (exactly one of them given): mean cross-entropy or squared
 * error, one gradient clip and one AdamW update over both. out (nullable, struct_size set by the caller)
 * receives the loss, gradient norm, learning rate, step, and in `tokens` the labels (or rows) that counted.
 * Returns as peftkit_head_forward, plus PEFTKIT_ERR_NUMERICAL (non-finite loss, gradient or update: nothing
 * changed).
 */
peftkit_status peftkit_head_train_step(peftkit_model *model, const int32_t *input_ids, const int32_t *token_type_ids,
                                       const int32_t *attention_mask, int32_t batch, int32_t seq_len,
                                       const int32_t *labels, const float *targets,
                                       const peftkit_train_config *config, peftkit_train_result *out);

/* ===================================================================================================
 * Tokenization
 *
 * A model may carry a tokenizer (byte-level BPE: GPT-2, SmolLM2, Llama-3 and Qwen2 vocabularies) and a
 * chat template (ChatML). peftkit_model_load reads them from the same place as the weights: a GGUF file's
 * tokenizer.ggml.* metadata (only tokenizer.ggml.model "gpt2"; add_bos_token, bos/eos ids honoured) and
 * tokenizer.chat_template, or a folder's tokenizer.json (else vocab.json + merges.txt) and
 * chat_template.jinja / tokenizer_config.json "chat_template". A tokenizer or template the library cannot
 * read is left out; the load itself does not fail because of it (peftkit_tokenizer_get_info tells what is
 * there, peftkit_tokenizer_issue why something is missing). Models from peftkit_model_create have
 * neither until peftkit_tokenizer_load.
 *
 * Thread safety: peftkit_tokenize, peftkit_detokenize, peftkit_chat_template_apply,
 * peftkit_tokenizer_get_info and peftkit_tokenizer_issue only read the attached tokenizer and do not
 * count as calls on the model for the overlap rule: they may run while another call on the same model
 * runs, including from inside the peftkit_token_callback of a model that is generating (e.g. to print
 * tokens as they come).
 *
 * Output buffers follow the two-call pattern: call with out = NULL and capacity 0 to learn the size
 * (PEFTKIT_OK, size in *n_out), then call again with a buffer that large (plus one byte for the NUL of a
 * text). A buffer that is too small gets PEFTKIT_ERR_BUFFER_TOO_SMALL, nothing written into it, and the
 * size needed in *n_out.
 *
 * Without a tokenizer, peftkit_tokenize and peftkit_detokenize fail with PEFTKIT_ERR_STATE; without a chat
 * template, so does peftkit_chat_template_apply.
 * =================================================================================================== */

/*
 * What the model's tokenizer is. Written by the library; before the call set
 * struct_size = sizeof(peftkit_tokenizer_info). Ids that do not exist are -1.
 */
typedef struct peftkit_tokenizer_info {
    uint32_t struct_size;       /* set by the caller: sizeof(peftkit_tokenizer_info) */
    int32_t has_tokenizer;      /* 0/1; when 0 every other field but has_chat_template is 0 or -1 */
    int32_t has_chat_template;  /* 0/1: peftkit_chat_template_apply can be used */
    int32_t vocab_size;         /* one past the largest token id (<= the model's vocab_size); 0 without */
    int32_t bos_id;             /* beginning-of-sequence token, or -1 */
    int32_t eos_id;             /* end-of-sequence token, or -1 */
    int32_t eot_id;             /* token that ends a chat turn (ChatML <|im_end|>, Llama-3 <|eot_id|>), or
                                   -1. Stop generating a chat reply on eos_id and eot_id. */
    int32_t adds_bos;           /* 0/1: peftkit_tokenize with add_special = 1 puts bos_id first */
} peftkit_tokenizer_info;

/*
 * Describes the model's tokenizer and chat template into *out. A model without them is not an error:
 * has_tokenizer = 0.
 *
 * out     out->struct_size must be set by the caller.
 * Returns PEFTKIT_OK or PEFTKIT_ERR_INVALID_ARGUMENT.
 */
peftkit_status peftkit_tokenizer_get_info(const peftkit_model *model, peftkit_tokenizer_info *out);

/*
 * Why the model has no tokenizer or no chat template although its files carry one (for example "tokenizer
 * model 'llama' is not supported", or a template outside the Jinja subset the library renders), written
 * like peftkit_adapter_name; "" (length 0) when nothing was left out.
 *
 * buf, cap  where to write the text and its NUL. buf may be NULL only when cap is 0: a size query.
 * len_out   nullable; receives the text's length in bytes, without the NUL, both on success and on
 *           PEFTKIT_ERR_BUFFER_TOO_SMALL.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_BUFFER_TOO_SMALL.
 */
peftkit_status peftkit_tokenizer_issue(const peftkit_model *model, char *buf, size_t cap, size_t *len_out);

/*
 * Reads a tokenizer and chat template and attaches them to the model, replacing what it had (the template
 * becomes none when the source has none).
 *
 * path    UTF-8: a .gguf file, a tokenizer.json file (chat template from the files next to it), or a
 *         model folder as peftkit_model_load reads. Not kept.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT, PEFTKIT_ERR_IO, PEFTKIT_ERR_NOT_FOUND (no tokenizer
 * there), PEFTKIT_ERR_FORMAT (malformed, or token ids beyond the model's vocab_size),
 * PEFTKIT_ERR_UNSUPPORTED (a tokenizer type the library does not implement), PEFTKIT_ERR_BUSY (another
 * call on the model is running). On failure the model keeps its previous tokenizer.
 */
peftkit_status peftkit_tokenizer_load(peftkit_model *model, const char *path);

/*
 * The token ids of a text.
 *
 * text           text_len bytes of UTF-8 (need not be NUL-terminated; a NUL byte is text). May be NULL
 *                only when text_len is 0.
 * add_special    0/1: add the tokens the tokenizer puts around a text (the BOS token when adds_bos).
 * parse_special  0/1: special tokens written in the text ("<|im_start|>") become their ids; with 0 they
 *                are tokenized as plain text.
 * out_ids        receives the ids; may be NULL only when capacity is 0 (a size query).
 * capacity       size of out_ids in ids.
 * n_out          required; receives the number of ids, on success and on PEFTKIT_ERR_BUFFER_TOO_SMALL.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, text not valid UTF-8, a flag not 0/1),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_STATE (no tokenizer).
 */
peftkit_status peftkit_tokenize(const peftkit_model *model, const char *text, size_t text_len, int32_t add_special,
                                int32_t parse_special, int32_t *out_ids, size_t capacity, size_t *n_out);

/*
 * The text of token ids: their bytes concatenated and read as UTF-8, invalid sequences (such as a character
 * cut between two calls) replaced by U+FFFD, as Hugging Face decodes. Detokenize a whole sequence at once
 * rather than token by token when a character may span tokens.
 *
 * ids            n_ids token ids, each in [0, vocab_size of the tokenizer); may be NULL when n_ids is 0.
 * skip_special   0/1: leave special tokens (BOS, EOS, <|im_end|>...) out of the text.
 * out            receives the UTF-8 text and a NUL; may be NULL only when capacity is 0 (a size query).
 *                The text may itself contain NUL bytes (a token for byte 0): use *n_out, not strlen.
 * capacity       size of out in bytes; it must hold the text and its NUL.
 * n_out          required; receives the text's length in bytes without the NUL, on success and on
 *                PEFTKIT_ERR_BUFFER_TOO_SMALL.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL, an id outside the vocabulary),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_STATE (no tokenizer).
 */
peftkit_status peftkit_detokenize(const peftkit_model *model, const int32_t *ids, size_t n_ids,
                                  int32_t skip_special, char *out, size_t capacity, size_t *n_out);

/*
 * Renders a conversation with the model's chat template, as transformers' apply_chat_template(...,
 * tokenize=False) does. Tokenize the result with parse_special = 1 and add_special = adds_bos.
 *
 * roles, contents  n_messages NUL-terminated UTF-8 strings each ("system", "user", "assistant", ... and the
 *                  message texts); read during the call only. May be NULL when n_messages is 0.
 * add_generation_prompt  0/1: end with the opening of an assistant turn.
 * out, capacity, n_out   as for peftkit_detokenize.
 * Returns PEFTKIT_OK, PEFTKIT_ERR_INVALID_ARGUMENT (NULL array or entry, invalid UTF-8, a flag not 0/1),
 * PEFTKIT_ERR_BUFFER_TOO_SMALL, PEFTKIT_ERR_STATE (no chat template).
 */
peftkit_status peftkit_chat_template_apply(const peftkit_model *model, const char *const *roles,
                                           const char *const *contents, size_t n_messages,
                                           int32_t add_generation_prompt, char *out, size_t capacity,
                                           size_t *n_out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PEFTKIT_H */
