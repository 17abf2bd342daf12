//! Line plots as SVG: axes with ticks and labels, one coloured polyline per series, a legend.
//! Plain text, viewable in any browser, and small enough to keep beside a README.

use std::fmt::Write;

/// One named curve.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line plot of several series on shared axes.
pub struct LinePlot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi - lo) / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl LinePlot<'_> {
    /// The plot as an SVG document; `Err` when no series has a finite point.
    pub fn to_svg(&self) -> Result<String, String> {
        let finite = || self.series.iter().flat_map(|s| &s.points).filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in finite() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if !x0.is_finite() {
            return Err(format!("nothing to plot for \"{}\": no finite points", self.title));
        }
        let pad = |lo: f64, hi: f64| if hi - lo > 1e-12 * hi.abs().max(1.0) { (lo, hi) } else { (lo - 0.5, hi + 0.5) };
        (x0, x1) = pad(x0, x1);
        (y0, y1) = pad(y0, y1);
        let (y0, y1) = (y0 - 0.03 * (y1 - y0), y1 + 0.03 * (y1 - y0));
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT);
        let py = |y: f64| HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM);

        let mut svg = String::new();
        let w = &mut svg;
        let _ = writeln!(
            w,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            w,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(self.title)
        );
        let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
        let _ = writeln!(
            w,
            r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            right - left,
            bottom - top
        );
        for x in ticks(x0, x1) {
            let _ = writeln!(
                w,
                r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{bottom}" stroke="#e0e0e0"/><text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"##,
                px(x),
                bottom + 16.0,
                round_label(x)
            );
        }
        for y in ticks(y0, y1) {
            let _ = writeln!(
                w,
                r##"<line x1="{left}" y1="{0:.1}" x2="{right}" y2="{0:.1}" stroke="#e0e0e0"/><text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
                py(y),
                left - 6.0,
                py(y) + 4.0,
                round_label(y)
            );
        }
        let _ = writeln!(
            w,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            HEIGHT - 12.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            w,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (top + bottom) / 2.0,
            escape(self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                w,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            if points.len() < 30 {
                for p in &points {
                    let (x, y) = p.split_once(',').expect("formatted as x,y");
                    let _ = writeln!(w, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
                }
            }
            let ly = top + 16.0 + 18.0 * i as f64;
            let _ = writeln!(
                w,
                r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
                left + 10.0,
                left + 34.0,
                left + 40.0,
                ly + 4.0,
                escape(&s.name)
            );
        }
        svg.push_str("</svg>\n");
        Ok(svg)
    }
}

/// A tick value without floating-point noise (`0.30000000000000004` → `0.3`).
fn round_label(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        let labels = |lo, hi| ticks(lo, hi).into_iter().map(round_label).collect::<Vec<_>>().join(" ");
        assert_eq!(labels(0.0, 1.0), "0 0.2 0.4 0.6 0.8 1");
        assert_eq!(labels(-13.3, 5.0), "-10 -5 0 5");
        assert_eq!(labels(0.0, 1500.0), "0 500 1000 1500");
        assert_eq!(labels(1.93, 2.27), "2 2.1 2.2");
    }

    #[test]
    fn a_plot_maps_its_extremes_onto_the_frame() {
        let plot = LinePlot {
            title: "t",
            x_label: "x",
            y_label: "y",
            series: vec![Series { name: "a<b".into(), points: vec![(0.0, 1.0), (1.0, 3.0)] }],
        };
        let svg = plot.to_svg().unwrap();
        // x from 0 to 1 spans the frame; y is padded by 3% of its range on each side.
        let y = |v: f64| HEIGHT - BOTTOM - (v - 0.94) / 2.12 * (HEIGHT - TOP - BOTTOM);
        assert!(
            svg.contains(&format!("points=\"{LEFT:.1},{:.1} {:.1},{:.1}\"", y(1.0), WIDTH - RIGHT, y(3.0))),
            "{svg}"
        );
        assert!(svg.contains("a&lt;b"));
        let empty = LinePlot {
            title: "none",
            x_label: "x",
            y_label: "y",
            series: vec![Series { name: "nan".into(), points: vec![(f64::NAN, 1.0)] }],
        };
        assert!(empty.to_svg().unwrap_err().contains("no finite points"));
    }
}
