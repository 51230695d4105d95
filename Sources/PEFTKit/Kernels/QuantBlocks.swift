import CPEFTKitKernels
#if canImport(Glibc)
import Glibc
#endif

// ggml's block formats, dequantised row by row. The layouts (all little-endian, `half` an IEEE binary16 scale;
// one "group" = 32 consecutive elements of a row):
//
//   type   block  bytes  layout                                          element value
//   Q8_0     32    34    half d, int8 q[32]                              q·d
//   Q4_0     32    18    half d, u8 qs[16]                               (q − 8)·d     q_j = qs[j] & 15, q_{j+16} = qs[j] >> 4
//   Q4_1     32    20    half d, half m, u8 qs[16]                       q·d + m
//   Q5_0     32    22    half d, u32 qh, u8 qs[16]                       (q − 16)·d    bit j of qh is bit 4 of q_j
//   Q5_1     32    24    half d, half m, u32 qh, u8 qs[16]               q·d + m
//   Q4_K    256   144    half d, half dmin, u8 sc[12], u8 qs[128]        (d·s_j)·q − dmin·m_j for group j; 6-bit s_j, m_j
//                        packed in sc; group j takes the low (even j) or high (odd j) nibbles of qs[32·(j/2) ..< +32]
//   Q5_K    256   176    as Q4_K with u8 qh[32] before qs               element l of group j: bit j of qh[l] is bit 4
//   Q6_K    256   210    u8 ql[128], u8 qh[64], int8 sc[16], half d      (d·sc[e/16])·(q − 32); low 4 bits from ql, high 2
//                        from qh (see Sources/CPEFTKitKernels/kernels.c for the bit positions)
//   F16, BF16  1    2    one value                                       widened exactly
//
// The products are evaluated in the order ggml and gguf-py use, without fused multiply-adds, so the result is
// bit-identical to `gguf.quants.dequantize` on every instruction-set path (Tests/Fixtures/quant).

/// The instruction-set path of the quantized kernels. `active` is the best the CPU runs, unless the
/// environment variable PEFTKIT_QUANT_ISA (scalar | avx2 | avx512) asks for a lower one.
enum QuantISA: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case scalar = 0, avx2 = 1, avx512 = 2

    /// The best path this CPU runs.
    static let detected: QuantISA = QuantISA(rawValue: pk_isa_detect()) ?? .scalar

    /// The path used when a caller does not name one.
    static let active = QuantISA(rawValue: isaPath(asking: "PEFTKIT_QUANT_ISA", detected: detected.rawValue)) ?? .scalar

    /// The paths this CPU runs (for tests: every one is checked against the others).
    static var available: [QuantISA] { allCases.filter { $0.rawValue <= detected.rawValue } }

    var description: String {
        switch self {
        case .scalar: return "scalar"
        case .avx2: return "AVX2+FMA"
        case .avx512: return "AVX-512 VNNI"
        }
    }
}

extension GGMLType {
    /// Whether PEFTKit's quant kernels handle this type (dequantisation and the products of `QuantizedMatrix`):
    /// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
    var hasQuantKernels: Bool { pk_type_supported(Int32(rawValue)) != 0 }

    /// Whether the type is block-quantized (products use 8-bit activations and integer dot products).
    var isBlockQuantized: Bool { hasQuantKernels && blockSize > 1 }

    /// The types with quant kernels, for messages.
    static var quantKernelNames: String {
        allCases.filter(\.hasQuantKernels).map(\.description).joined(separator: ", ")
    }
}

/// Dequantises `rows` rows of `n` elements of `type` (row r at `src + r·rowBytes`) into `dst + r·ldd`.
/// Unchecked: `type.hasQuantKernels`, `n` a multiple of `type.blockSize`, `rowBytes ≥ n / blockSize · blockBytes`.
@inline(__always)
func quantDequantizeRows(_ type: GGMLType, _ src: UnsafeRawPointer, rowBytes: Int, rows: Int, n: Int,
                         _ dst: UnsafeMutablePointer<Float>, ldd: Int, isa: QuantISA = .active) {
    pk_dequantize_rows(isa.rawValue, Int32(type.rawValue), src, rowBytes, Int64(rows), Int64(n), dst, Int64(ldd))
}
