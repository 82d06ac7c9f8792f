//! A hand-written SVG bar chart (no plotting dependencies): one group per system, one bar per
//! metric.

pub struct Bar<'a> {
    pub label: &'a str,
    pub values: Vec<f64>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `series` names the metrics (one colour each); values are expected in [0, 1].
pub fn bar_chart(title: &str, series: &[&str], bars: &[Bar]) -> String {
    const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759"];
    let (left, top, plot_h, group_w, bar_w) = (60.0, 50.0, 260.0, 110.0, 28.0);
    let width = left + group_w * bars.len() as f64 + 20.0;
    let height = top + plot_h + 110.0;
    let max = bars.iter().flat_map(|b| b.values.iter().copied()).fold(0.0f64, f64::max).max(1e-9);
    let scale_max = ((max * 10.0).ceil() / 10.0).min(1.0).max(max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title)
    );
    for i in 0..=5 {
        let v = scale_max * i as f64 / 5.0;
        let y = top + plot_h - plot_h * v / scale_max;
        s += &format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>\n",
            width - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (gi, bar) in bars.iter().enumerate() {
        let gx = left + group_w * gi as f64 + 12.0;
        for (si, v) in bar.values.iter().enumerate() {
            let h = plot_h * v.max(0.0) / scale_max;
            let x = gx + bar_w * si as f64;
            let y = top + plot_h - h;
            s += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{v:.3}</text>\n",
                bar_w - 3.0,
                COLORS[si % COLORS.len()],
                x + (bar_w - 3.0) / 2.0,
                y - 3.0
            );
        }
        let lx = gx + bar_w * bar.values.len() as f64 / 2.0;
        let ly = top + plot_h + 14.0;
        s += &format!(
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"end\" transform=\"rotate(-30 {lx:.1} {ly:.1})\">{}</text>\n",
            escape(bar.label)
        );
    }
    for (si, name) in series.iter().enumerate() {
        let x = left + 140.0 * si as f64;
        let y = height - 14.0;
        s += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{y:.1}\">{}</text>\n",
            y - 10.0,
            COLORS[si % COLORS.len()],
            x + 16.0,
            escape(name)
        );
    }
    s += &format!("<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n", top + plot_h, width - 20.0, top + plot_h);
    s += "</svg>\n";
    s
}
