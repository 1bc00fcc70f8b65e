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

/// One line chart: a line per series (the run, then the baseline), from
/// the origin to `(x_max, y_max)`.
struct Chart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_max: f64,
    y_max: f64,
}

fn line_chart(
    report: &Report,
    path: &Path,
    chart: Chart<'_>,
    points: impl Fn(&Figures) -> Vec<(f64, f64)>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut plot = ChartBuilder::on(&root)
        .caption(
            format!("{}: {}", report.scenario, chart.title),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..chart.x_max, 0.0..chart.y_max)
        .map_err(err)?;
    plot.configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .draw()
        .map_err(err)?;
    for (f, colour) in series(report) {
        plot.draw_series(LineSeries::new(points(f), colour))
            .map_err(err)?
            .label(f.mode.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    plot.configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn latency_cdf(report: &Report, path: &Path) -> anyhow::Result<()> {
    let max = series(report)
        .iter()
        .filter_map(|(f, _)| f.latencies.last().copied())
        .fold(1.0f64, f64::max);
    let chart = Chart {
        title: "latency CDF",
        x_desc: "latency (ms)",
        y_desc: "share of deliveries",
        x_max: max * 1.05,
        y_max: 1.0,
    };
    line_chart(report, path, chart, |f| {
        let n = f.latencies.len().max(1) as f64;
        f.latencies
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, (i + 1) as f64 / n))
            .collect()
    })
}

fn delivery(report: &Report, path: &Path) -> anyhow::Result<()> {
    let max_t = series(report)
        .iter()
        .filter_map(|(f, _)| f.delivery_over_time.last().map(|x| x.0))
        .fold(1.0f64, f64::max);
    let chart = Chart {
        title: "delivered over time",
        x_desc: "seconds since the workload started",
        y_desc: "share of expected deliveries",
        x_max: max_t,
        y_max: 1.05,
    };
    line_chart(report, path, chart, |f| f.delivery_over_time.clone())
}

fn bytes(report: &Report, path: &Path) -> anyhow::Result<()> {
    let max = series(report)
        .iter()
        .filter_map(|(f, _)| f.bytes_per_node.last().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        / 1024.0;
    let chart = Chart {
        title: "wire bytes per node (sorted)",
        x_desc: "node (sorted by bytes)",
        y_desc: "KiB sent + received",
        x_max: report.nodes as f64,
        y_max: max * 1.05,
    };
    line_chart(report, path, chart, |f| {
        f.bytes_per_node
            .iter()
            .enumerate()
            .map(|(i, b)| (i as f64, *b as f64 / 1024.0))
            .collect()
    })
}
