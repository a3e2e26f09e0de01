//! The sweep's picture: latency against publication rate, one line per quantile, drawn
//! with plotters' SVG backend (text is left to the viewer's fonts, so none are needed).

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

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
    // Room below and above, so the lines never sit on the frame.
    let (y_min, y_max) = if y_min.is_finite() {
        (y_min / 2.0, y_max * 2.0)
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
        .y_label_formatter(&|ms| format!("{ms}"))
        .draw()?;
    for (index, line) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
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
