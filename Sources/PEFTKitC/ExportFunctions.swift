// Saving whole models (Model.saveModel): the format number translated, the path checked, the core called.

import CPEFTKit
import PEFTKit

@c @implementation
public func peftkit_model_save(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ format: Int32) -> peftkit_status {
    entry("peftkit_model_save") {
        let h = try ModelHandle.from(model)
        let p = try readString(path, "path")
        guard !p.isEmpty else { throw ShimError.invalid("path is empty") }
        let f: ModelFormat
        switch format {
        case PEFTKIT_MODEL_FORMAT_HF: f = .huggingFace
        case PEFTKIT_MODEL_FORMAT_GGUF_F32: f = .gguf(.f32)
        case PEFTKIT_MODEL_FORMAT_GGUF_F16: f = .gguf(.f16)
        default: throw ShimError.invalid("format \(format) is not a PEFTKIT_MODEL_FORMAT_* value")
        }
        try h.model.saveModel(to: p, format: f)
    }
}
