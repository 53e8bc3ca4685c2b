//! The PNG next to the CSV: time to 99 % and bytes per node against the number of nodes, one
//! line per tier and scenario.
//!
//! Text needs a TrueType font: the first of [`FONT_PATHS`] (or `$DIRECTORD_MESH_SIM_FONT`)
//! that exists. Without one the plot is still drawn, without its labels, and the caller is
//! told so.

use std::{collections::BTreeMap, path::Path};

use plotters::prelude::*;

use crate::metrics::Summary;

/// Where fonts usually live.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Registers a font for the labels; false when none was found.
fn load_font() -> bool {
    let mut paths: Vec<String> = std::env::var("DIRECTORD_MESH_SIM_FONT")
        .into_iter()
        .collect();
    paths.extend(FONT_PATHS.iter().map(|p| p.to_string()));
    for path in paths {
        if let Ok(bytes) = std::fs::read(&path) {
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Series = BTreeMap<String, Vec<(f64, f64)>>;

/// Draws `rows` into `path`. Returns whether the labels could be drawn.
pub fn draw(rows: &[Summary], path: &Path) -> Result<bool, String> {
    let labels = load_font();
    let mut time: Series = BTreeMap::new();
    let mut bytes: Series = BTreeMap::new();
    for r in rows {
        let name = format!("tier {} {}", r.tier, r.scenario);
        if let Some(t) = r.have[1] {
            time.entry(format!("{name}: job"))
                .or_default()
                .push((r.nodes as f64, t));
        }
        if let Some(t) = r.results[1] {
            time.entry(format!("{name}: results"))
                .or_default()
                .push((r.nodes as f64, t));
        }
        if let Some(traffic) = &r.traffic {
            bytes
                .entry(name)
                .or_default()
                .push((r.nodes as f64, traffic.kib_per_node()));
        }
    }
    for s in time.values_mut().chain(bytes.values_mut()) {
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(700);
    panel(
        &left,
        &time,
        "time to 99 % (s)",
        "Time for 99 % of targets",
        labels,
    )?;
    panel(
        &right,
        &bytes,
        "KiB sent per node",
        "Traffic per node",
        labels,
    )?;
    root.present()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(labels)
}

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    series: &Series,
    y_label: &str,
    title: &str,
    labels: bool,
) -> Result<(), String> {
    let points = series.values().flatten();
    let x_max = points.clone().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let y_max = points.clone().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let mut builder = ChartBuilder::on(area);
    builder.margin(16);
    if labels {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(44)
            .y_label_area_size(64);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut chart = builder
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("nodes").y_desc(y_label);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line = chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        if labels {
            line.label(name.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if labels {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
