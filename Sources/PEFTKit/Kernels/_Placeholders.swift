typealias FP = UnsafeMutablePointer<Float>
func layerNormForward(_ out: FP, _ mean: FP, _ rstd: FP, _ inp: FP, _ w: FP, _ b: FP, _ n: Int, _ c: Int, _ eps: Float) { fatalError() }
func layerNormBackward(_ dinp: FP, _ dw: FP?, _ db: FP?, _ dout: FP, _ inp: FP, _ w: FP, _ mean: FP, _ rstd: FP, _ n: Int, _ c: Int) { fatalError() }
func rmsNormForward(_ out: FP, _ rstd: FP, _ inp: FP, _ w: FP, _ n: Int, _ c: Int, _ eps: Float) { fatalError() }
func rmsNormBackward(_ dinp: FP, _ dw: FP?, _ dout: FP, _ inp: FP, _ w: FP, _ rstd: FP, _ n: Int, _ c: Int) { fatalError() }
func activationForward(_ a: Activation, _ out: FP, _ inp: FP, _ n: Int) { fatalError() }
func activationBackward(_ a: Activation, _ dinp: FP, _ inp: FP, _ dout: FP, _ n: Int) { fatalError() }
func swigluForward(_ out: FP, _ g: FP, _ u: FP, _ n: Int) { fatalError() }
func swigluBackward(_ dg: FP, _ du: FP, _ dout: FP, _ g: FP, _ u: FP, _ n: Int) { fatalError() }
final class RopeTable { init(theta: Float, headDim: Int, maxPositions: Int) throws { fatalError() } }
func ropeForward(_ x: FP, _ t: RopeTable, rows: Int, seqLen: Int, posOffset: Int, numHeads: Int, headDim: Int, rowStride: Int) { fatalError() }
func ropeBackward(_ x: FP, _ t: RopeTable, rows: Int, seqLen: Int, posOffset: Int, numHeads: Int, headDim: Int, rowStride: Int) { fatalError() }
func crossEntropyForwardBackward(_ logits: FP, _ losses: FP?, _ targets: UnsafePointer<Int32>, _ n: Int, _ v: Int, _ s: Float, _ g: Bool) -> (Double, Int) { fatalError() }
func adamwUpdate(_ p: FP, _ g: FP, _ m: FP, _ v: FP, _ n: Int, _ lr: Float, _ b1: Float, _ b2: Float, _ eps: Float, _ wd: Float, _ step: Int) { fatalError() }
func sumOfSquares(_ x: FP, _ n: Int) -> Double { fatalError() }
func scaleInPlace(_ x: FP, _ n: Int, _ s: Float) { fatalError() }
func addInPlace(_ d: FP, _ s: FP, _ n: Int) { fatalError() }
func add(_ o: FP, _ a: FP, _ b: FP, _ n: Int) { fatalError() }
func embeddingForward(_ out: FP, _ ids: UnsafePointer<Int32>, _ wte: FP, _ wpe: FP?, _ n: Int, _ t: Int, _ c: Int, _ pos: Int) { fatalError() }
public struct Rng { public init(seed: UInt64) { fatalError() }; public mutating func nextUInt64() -> UInt64 { 0 }; public mutating func nextFloat() -> Float { 0 }; public mutating func normal() -> Float { 0 } }
func fillNormal(_ p: FP, _ n: Int, std: Float, rng: inout Rng) {}
func fillUniform(_ p: FP, _ n: Int, low: Float, high: Float, rng: inout Rng) {}
func fillTruncNormal(_ p: FP, _ n: Int, std: Float, a: Float, b: Float, rng: inout Rng) {}
