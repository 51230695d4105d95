// SafeTensorsFile: the 8-byte header length, the JSON header (dtypes, shapes, data_offsets), and reading every
// tensor it declares (fp32 zero-copy, widening from F16/BF16/F64, integer tensors).

@testable import PEFTKit

enum Target {
    static func setUp() throws {}

    static func run(_ input: [UInt8]) {
        guard let s = try? Storage.allocate(bytes: input.count) else { return }
        input.withUnsafeBytes { if let b = $0.baseAddress { s.base.copyMemory(from: b, byteCount: input.count) } }
        guard let f = try? SafeTensorsFile(storage: s, path: "fuzz-input") else { return }
        for n in f.names {
            _ = f.info(n)
            if let t = try? f.tensor(n) { _ = t.count > 0 ? t.data[t.count - 1] : 0 }
            _ = try? f.floatArray(n)
            _ = try? f.int32Tensor(n)
        }
    }

    static func seeds() throws -> [String: [UInt8]] {
        let dir = Fuzz.tempDir()
        try SafeTensorsWriter.write(path: dir + "/a.safetensors",
                                    tensors: [("w", [2, 3], [1, 2, 3, 4, 5, 6]), ("empty", [0, 4], [])],
                                    int32Tensors: [("ids", [3], [7, -1, 1 << 30])], metadata: ["format": "pt"])
        let f16 = [UInt8]([0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00])  // 1, -2, 65504, subnormal
        return [
            "valid-f32-i32": try Fuzz.read(dir + "/a.safetensors"),
            "f16-bf16-f64-i64": Fuzz.safetensors(
                header: #"{"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},"#
                    + #""d":{"dtype":"F64","shape":[1],"data_offsets":[12,20]},"l":{"dtype":"I64","shape":[1],"data_offsets":[20,28]}}"#,
                data: f16 + [0x80, 0x3f, 0x80, 0x7f] + [0, 0, 0, 0, 0, 0, 0xf0, 0x3f] + [0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0]),
            "misaligned-f32": Fuzz.safetensors(header: #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}"#,
                                               data: [0, 0, 0, 0x80, 0x3f]),
            "claims-100GB-tensor": Fuzz.safetensors(
                header: #"{"big":{"dtype":"F32","shape":[25000000000],"data_offsets":[0,100000000000]}}"#, data: [0, 0, 0, 0]),
            "claims-huge-header": Fuzz.safetensors(header: "{}", declaredLength: 1 << 62),
            "header-length-past-end": Fuzz.safetensors(header: "{}", declaredLength: 3),
            "overlapping": Fuzz.safetensors(
                header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                data: [1, 2, 3]),
            "shape-overflow": Fuzz.safetensors(
                header: #"{"a":{"dtype":"F64","shape":[4611686018427387904,4],"data_offsets":[0,0]}}"#),
            "negative-dim": Fuzz.safetensors(header: #"{"a":{"dtype":"I8","shape":[-1],"data_offsets":[0,0]}}"#),
            "metadata-only": Fuzz.safetensors(header: #"{"__metadata__":{"k":"v"}}"#),
            "short": [1, 0, 0],
        ]
    }
}
