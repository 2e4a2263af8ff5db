import Foundation

/// A small line chart written as SVG: one polyline per series over shared x
/// values (e.g. prefill latency against token count, one line per mode).
struct SVGPlot {
    var title: String
    var xLabel: String
    var yLabel: String
    /// Series name → (x, y) points.
    var series: [(name: String, points: [(Double, Double)])]

    func render(width: Double = 720, height: Double = 440) -> String {
        let left = 80.0, right = 170.0, top = 50.0, bottom = 60.0
        let plotW = width - left - right, plotH = height - top - bottom
        let xs = series.flatMap { $0.points.map(\.0) }, ys = series.flatMap { $0.points.map(\.1) }
        let xMin = xs.min() ?? 0, xMax = max(xs.max() ?? 1, xMin + 1)
        let yMax = (ys.max() ?? 1) * 1.1, yMin = 0.0
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (y - yMin) / (yMax - yMin) * plotH }
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(width / 2)\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">\(esc(title))</text>\n"
        // Axes, ticks and grid.
        out += "<line x1=\"\(left)\" y1=\"\(top + plotH)\" x2=\"\(left + plotW)\" y2=\"\(top + plotH)\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(top + plotH)\" stroke=\"black\"/>\n"
        for i in 0...5 {
            let y = yMin + (yMax - yMin) * Double(i) / 5
            out += "<line x1=\"\(left)\" y1=\"\(py(y))\" x2=\"\(left + plotW)\" y2=\"\(py(y))\" stroke=\"#ddd\"/>\n"
            out += "<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(String(format: "%.0f", y))</text>\n"
        }
        for x in Set(xs).sorted() {
            out += "<text x=\"\(px(x))\" y=\"\(top + plotH + 18)\" text-anchor=\"middle\">\(String(format: "%.0f", x))</text>\n"
        }
        out += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 15)\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        out += "<text x=\"20\" y=\"\(top + plotH / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 20 \(top + plotH / 2))\">\(esc(yLabel))</text>\n"
        for (index, s) in series.enumerated() {
            let color = colors[index % colors.count]
            let points = s.points.sorted { $0.0 < $1.0 }.map { "\(px($0.0)),\(py($0.1))" }.joined(separator: " ")
            out += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>\n"
            for p in s.points { out += "<circle cx=\"\(px(p.0))\" cy=\"\(py(p.1))\" r=\"3\" fill=\"\(color)\"/>\n" }
            let ly = top + 10 + Double(index) * 20
            out += "<line x1=\"\(left + plotW + 15)\" y1=\"\(ly)\" x2=\"\(left + plotW + 40)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(left + plotW + 46)\" y=\"\(ly + 4)\">\(esc(s.name))</text>\n"
        }
        return out + "</svg>\n"
    }
}
