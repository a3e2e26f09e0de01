//! The sweep's picture: latency against publication rate, one line per quantile, drawn
//! with plotters' SVG backend (text is left to the viewer's fonts, so none are needed).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

/// Blue, orange, red (the first of Matplotlib's "tab10"): apart on white and in print.
const COLORS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
];

/// One line of the plot: (publications per second, milliseconds) points.
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` to an SVG file at `path`, the latency on a log scale.
pub fn latency_svg(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    draw(path, title, y_desc, series).with_context(|| format!("drawing {}", path.display()))
}

fn draw(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let x_max = points().map(|(x, _)| x).fold(1.0, f64::max) * 1.05;
    let y_min = points().map(|(_, y)| y).fold(f64::INFINITY, f64::min);
    let y_max = points().map(|(_, y)| y).fold(0.0, f64::max);
    // Whole decades: plotters labels a log axis from the first power of ten in range (and
    // the bottom one, just under, stays in range through its float rounding).
    let (y_min, y_max) = if y_min.is_finite() {
        (
            decade(y_min.log10().floor()) * 0.999,
            decade(y_max.log10().ceil()),
        )
    } else {
        (0.1, 10.0)
    };

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("publications per second (reached)")
        .y_desc(y_desc)
        .x_label_formatter(&|rate| format!("{rate:.0}"))
        // Enough for 1, 2, ..., 9 in each decade.
        .y_labels(30)
        // Rounded, or the light labels read 0.30000000000000004.
        .y_label_formatter(&|ms| format!("{}", (ms * 1000.0).round() / 1000.0))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(
            line.points
                .iter()
                .map(|&point| Circle::new(point, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn decade(exponent: f64) -> f64 {
    10f64.powf(exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_each_series_with_its_legend() {
        let dir = std::env::temp_dir().join(format!("herald-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.svg");
        let series = [
            Series {
                name: "p50",
                points: vec![(10.0, 0.8), (20.0, 0.9)],
            },
            Series {
                name: "p99.9",
                points: vec![(10.0, 2.5), (20.0, 40.0)],
            },
        ];
        latency_svg(&path, "a title", "ms", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.80}");
        for text in ["a title", "p50", "p99.9", "publications per second"] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        // Each series' line, then its legend sample, in its colour (axes and ticks are thin).
        let lines = svg
            .lines()
            .filter(|line| line.starts_with("<polyline") && line.contains(r#"stroke-width="2""#));
        let colours: Vec<&str> = lines
            .map(|line| &line[line.find("stroke=").unwrap()..][..16])
            .collect();
        assert_eq!(
            colours,
            [
                r##"stroke="#1F77B4""##,
                r##"stroke="#FF7F0E""##,
                r##"stroke="#1F77B4""##,
                r##"stroke="#FF7F0E""##
            ],
            "{svg}"
        );
    }
}
