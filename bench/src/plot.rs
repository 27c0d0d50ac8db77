//! The latency percentile curve as an SVG (plotters), one line per run, on
//! the usual HdrHistogram axes: latency against percentile, with the
//! percentile axis stretched towards the tail (`-log10(1 - p)`), so p50,
//! p90, p99, p99.9 and p99.99 are evenly spaced.

use plotters::prelude::*;
use std::path::Path;

/// One run to draw: a label and `(quantile, latency µs)` points.
#[derive(Clone, Debug)]
pub struct Curve {
    /// Legend text.
    pub label: String,
    /// Points, quantile ascending.
    pub points: Vec<(f64, u64)>,
}

impl Curve {
    /// Reads the `percentile_curve_us` of a `kubewire-bench run --json`
    /// report.
    pub fn from_report(label: &str, report: &serde_json::Value) -> Option<Curve> {
        let points = report
            .get("percentile_curve_us")?
            .as_array()?
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_u64()?)))
            .collect();
        Some(Curve {
            label: label.to_string(),
            points,
        })
    }
}

/// `-log10(1 - q)`: 0 at p0, 1 at p90, 2 at p99 …
fn nines(quantile: f64) -> f64 {
    -(1.0 - quantile).max(1e-6).log10()
}

/// Draws the curves into an SVG file.
pub fn write_svg(path: &Path, title: &str, curves: &[Curve]) -> Result<(), String> {
    let max_us = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(1)
        .max(1);
    let max_nines = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| nines(p.0)))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_nines, (1u64..max_us * 2).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| {
            let q = 1.0 - 10f64.powf(-x);
            format!("p{}", (q * 100.0 * 1000.0).round() / 1000.0)
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (index, curve) in curves.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(
                curve.points.iter().map(|&(q, us)| (nines(q), us.max(1))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(curve.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_reports_curve_becomes_an_svg_with_one_line() {
        let points: Vec<serde_json::Value> = (0..51)
            .map(|i| {
                let quantile = 1.0 - 0.5f64.powi(i);
                serde_json::json!([quantile, 100 + 10 * i])
            })
            .collect();
        let report = serde_json::json!({ "percentile_curve_us": points });
        let curve = Curve::from_report("kubewire", &report).unwrap();
        assert_eq!(curve.points.len(), 51);
        let dir = std::env::temp_dir().join(format!("kubewire-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let svg = dir.join("latency.svg");
        write_svg(&svg, "test", &[curve]).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("<polyline") && text.contains("kubewire")
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
