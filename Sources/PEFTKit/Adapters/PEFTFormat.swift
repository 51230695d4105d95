// What every HF PEFT adapter folder shares, whatever the method: `adapter_config.json` (the PEFT config, keys
// sorted, two-space indent) and `adapter_model.safetensors` (F32, metadata {"format": "pt"}). Tensor names
// are PEFT's `named_parameters()` names without the adapter name. Tests/Fixtures/peft/README.md records
// what PEFT itself reads and writes. The methods' own fields live in their folders (`*File.swift`).

/// The fields PEFT writes for every method; the method's fields are merged over them.
/// The task type is CAUSAL_LM for decoders and FEATURE_EXTRACTION for an encoder (what PEFT loads on a bare
/// `BertModel`); a task head's save overrides it with SEQ_CLS or TOKEN_CLS.
func peftCommonFields(_ model: ModelConfig) -> [String: JSONValue] {
    [
        "auto_mapping": .null, "base_model_name_or_path": .null, "inference_mode": .bool(true),
        "modules_to_save": .null, "revision": .null,
        "task_type": .string(model.encoder != nil ? "FEATURE_EXTRACTION" : "CAUSAL_LM"),
    ]
}

/// The task types PEFTKit takes on encoders (BERT), and the `modules_to_save` entries that name an encoder's task
/// head (saved and read with the adapter by the engine; PEFT adds "score" for other architectures' heads).
let encoderTaskTypes: Set<String> = ["SEQ_CLS", "TOKEN_CLS", "FEATURE_EXTRACTION"]
let encoderHeadModules: Set<String> = ["classifier", "score"]

/// Checks the fields every PEFT config may carry that PEFTKit cannot honour. On encoders, `task_type` may also be
/// SEQ_CLS, TOKEN_CLS or FEATURE_EXTRACTION and `modules_to_save` may name the task head ("classifier").
func checkPEFTCommon(_ f: ConfigFields, _ model: ModelConfig) throws {
    let encoder = model.encoder != nil
    if let t = try f.string("task_type"), t != "CAUSAL_LM", !(encoder && encoderTaskTypes.contains(t)) {
        throw f.refuse("task_type '\(t)' (\(encoder ? "encoders take SEQ_CLS, TOKEN_CLS, FEATURE_EXTRACTION" : "PEFTKit decoders are causal LMs"))")
    }
    if f.has("modules_to_save"), !(f.object["modules_to_save"]?.isNeutral ?? true) {
        let names: [String]? = if case .array(let a)? = f.object["modules_to_save"] {
            a.compactMap { if case .string(let s) = $0 { s } else { nil } }
        } else { nil }
        guard encoder, let names, !names.isEmpty, Set(names).isSubset(of: encoderHeadModules) else {
            throw f.refuse("modules_to_save (fully trained extra modules\(encoder ? " other than the task head 'classifier'" : ""))")
        }
    }
    if !(f.object["trainable_token_indices"]?.isNeutral ?? true) { throw f.refuse("trainable_token_indices") }
}

/// `layers_to_transform` as PEFT writes it: null for every layer.
func peftLayerList(_ layers: [Int], _ model: ModelConfig) -> JSONValue {
    Set(layers).count == model.numLayers ? .null : .array(Set(layers).sorted().map { .int($0) })
}

/// PEFT's key prefix of the module at (layer, site).
func peftModuleKey(_ l: Int, _ s: LinearSite, _ model: ModelConfig) -> String {
    "base_model.model." + s.module(model.architecture, layer: l)
}

/// A float setting as Python would write it: an int when integral (PEFT's `lora_alpha` is usually one).
func pythonNumber(_ x: Float) -> JSONValue {
    let d = decimalDouble(x)
    return d == d.rounded() && abs(d) < 1e15 ? .int(Int(d)) : .double(d)
}

/// The key of prompt and prefix tuning's one tensor.
let peftEmbeddingsKey = "prompt_embeddings"
