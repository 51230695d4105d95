/// The Double nearest the shortest decimal that prints as `f` (0.01 as Float becomes 0.01 as Double), so
/// hyper-parameters given as Float match a Python float of the same literal.
func decimalDouble(_ f: Float) -> Double {
    Double("\(f)") ?? Double(f)
}
