//! SVG plots of a report: latency CDF, delivery over time, bytes per node.
//! plotters with its SVG backend only: text goes into the SVG as text, so
//! no font files or font libraries are needed.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Figures, Report};

const SIZE: (u32, u32) = (800, 500);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Each figure with its colour: the run, then the baseline.
fn series(report: &Report) -> Vec<(&Figures, RGBColor)> {
    let mut v = vec![(&report.run, BLUE)];
    if let Some(b) = &report.baseline {
        v.push((b, RED));
    }
    v
}

/// Writes `latency_cdf.svg`, `delivery.svg` and `bytes_per_node.svg`.
pub(crate) fn write_all(report: &Report, dir: &Path) -> anyhow::Result<()> {
    latency_cdf(report, &dir.join("latency_cdf.svg"))?;
    delivery(report, &dir.join("delivery.svg"))?;
    bytes(report, &dir.join("bytes_per_node.svg"))?;
    Ok(())
}

fn latency_cdf(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = series(report)
        .iter()
        .filter_map(|(f, _)| f.latencies.last().copied())
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: latency CDF", report.scenario),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max * 1.05, 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("share of deliveries")
        .draw()
        .map_err(err)?;
    for (f, colour) in series(report) {
        let n = f.latencies.len().max(1) as f64;
        let points = f
            .latencies
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, (i + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, colour))
            .map_err(err)?
            .label(f.mode.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn delivery(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_t = series(report)
        .iter()
        .filter_map(|(f, _)| f.delivery_over_time.last().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: delivered over time", report.scenario),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_t, 0.0..1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workload started")
        .y_desc("share of expected deliveries")
        .draw()
        .map_err(err)?;
    for (f, colour) in series(report) {
        chart
            .draw_series(LineSeries::new(
                f.delivery_over_time.iter().copied(),
                colour,
            ))
            .map_err(err)?
            .label(f.mode.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn bytes(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = series(report)
        .iter()
        .filter_map(|(f, _)| f.bytes_per_node.last().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1024.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: wire bytes per node (sorted)", report.scenario),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..report.nodes as f64, 0.0..max * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("node (sorted by bytes)")
        .y_desc("KiB sent + received")
        .draw()
        .map_err(err)?;
    for (f, colour) in series(report) {
        let points = f
            .bytes_per_node
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64, *b as f64 / 1024.0));
        chart
            .draw_series(LineSeries::new(points, colour))
            .map_err(err)?
            .label(f.mode.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
