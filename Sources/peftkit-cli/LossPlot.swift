/// A line plot of the loss per step as a standalone SVG document: axes with a few labelled ticks, the raw
/// loss as a thin line and its running mean over ~5% of the steps as a thick one.
func lossPlotSVG(_ losses: [Float], title: String) -> String {
    let w = 640.0, h = 360.0
    let left = 64.0, right = 16.0, top = 36.0, bottom = 44.0
    let pw = w - left - right, ph = h - top - bottom
    let ys = losses.map(Double.init).filter(\.isFinite)
    var lo = ys.min() ?? 0, hi = ys.max() ?? 1
    if hi - lo < 1e-6 { lo -= 0.5; hi += 0.5 }
    let pad = (hi - lo) * 0.05
    lo = max(0, lo - pad); hi += pad
    let n = max(1, losses.count)
    func x(_ i: Int) -> Double { left + (n == 1 ? pw / 2 : pw * Double(i) / Double(n - 1)) }
    func y(_ v: Double) -> Double { top + ph * (1 - (v - lo) / (hi - lo)) }
    func num(_ v: Double) -> String { fmt(v, 1) }

    var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" viewBox="0 0 \(Int(w)) \(Int(h))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(num(w / 2))" y="22" text-anchor="middle" font-size="14">\(escapeXML(title))</text>

        """
    // Horizontal grid lines and loss labels.
    for k in 0...4 {
        let v = lo + (hi - lo) * Double(k) / 4
        s += "<line x1=\"\(num(left))\" y1=\"\(num(y(v)))\" x2=\"\(num(left + pw))\" y2=\"\(num(y(v)))\" stroke=\"#ddd\"/>\n"
        s += "<text x=\"\(num(left - 6))\" y=\"\(num(y(v) + 4))\" text-anchor=\"end\">\(fmt(v, 2))</text>\n"
    }
    // Step labels: first, last and three in between.
    var ticks: [Int] = []
    for k in 0...4 { let i = (n - 1) * k / 4; if !ticks.contains(i) { ticks.append(i) } }
    for i in ticks {
        s += "<line x1=\"\(num(x(i)))\" y1=\"\(num(top + ph))\" x2=\"\(num(x(i)))\" y2=\"\(num(top + ph + 4))\" stroke=\"black\"/>\n"
        s += "<text x=\"\(num(x(i)))\" y=\"\(num(top + ph + 18))\" text-anchor=\"middle\">\(i + 1)</text>\n"
    }
    s += "<rect x=\"\(num(left))\" y=\"\(num(top))\" width=\"\(num(pw))\" height=\"\(num(ph))\" fill=\"none\" stroke=\"black\"/>\n"
    s += "<text x=\"\(num(left + pw / 2))\" y=\"\(num(h - 8))\" text-anchor=\"middle\">step</text>\n"
    s += "<text transform=\"translate(16 \(num(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">loss</text>\n"

    func polyline(_ values: [Double], _ style: String) -> String {
        var pts: [String] = []
        for (i, v) in values.enumerated() where v.isFinite { pts.append("\(num(x(i))),\(num(y(v)))") }
        return "<polyline fill=\"none\" \(style) points=\"\(pts.joined(separator: " "))\"/>\n"
    }
    let raw = losses.map(Double.init)
    s += polyline(raw, "stroke=\"#9bbbe0\" stroke-width=\"1\"")
    let win = max(1, n / 20)
    if win > 1 {
        var mean: [Double] = []
        var sum = 0.0, count = 0
        var window: [Double] = []
        for v in raw where v.isFinite {
            window.append(v); sum += v; count += 1
            if window.count > win { sum -= window.removeFirst(); count -= 1 }
            mean.append(sum / Double(count))
        }
        s += polyline(mean, "stroke=\"#1f5fa8\" stroke-width=\"2\"")
    }
    s += "</svg>\n"
    return s
}

func escapeXML(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(c)
        }
    }
    return out
}
