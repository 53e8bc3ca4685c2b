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
    // Drawn in memory and written after: an error writing the file is said as the system
    // says it ("No space left on device"), not in plotters' debug format.
    let mut pixels = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
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
        root.present().map_err(|e| e.to_string())?;
    }
    write_png(path, &pixels).map_err(|e| e.to_string())?;
    Ok(labels)
}

/// The size of the plot, in pixels.
const WIDTH: u32 = 1800;
const HEIGHT: u32 = 600;

/// Writes `pixels` (RGB, [`WIDTH`] x [`HEIGHT`]) to `path` as a PNG.
fn write_png(path: &Path, pixels: &[u8]) -> Result<(), png::EncodingError> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(&mut file, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    // A failed last write is said, not lost in the buffer's drop.
    std::io::Write::flush(&mut file)?;
    Ok(())
}

/// Strong colours, told apart on white (the palette's pastels were barely seen).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(0, 0, 0),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];

fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    series: &Series,
    y_label: &str,
    title: &str,
    labels: bool,
) -> Result<(), String> {
    let points = series.values().flatten();
    if points.clone().next().is_none() {
        // Nothing measured (tier 2 counts no bytes): said, not an empty chart.
        if labels {
            let (w, h) = area.dim_in_pixel();
            let style = ("sans-serif", 18).into_font().color(&BLACK);
            area.draw(&Text::new(
                format!("{title}: not measured in these runs"),
                (w as i32 / 6, h as i32 / 2),
                style,
            ))
            .map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    // The sizes run, with room either side on the log scale, and at least the power of ten
    // below them (a tick to read the sizes by, even for one size).
    let smallest = points.clone().map(|p| p.0).fold(f64::MAX, f64::min);
    let x_min = (10f64.powf(smallest.log10().floor()) * 0.9).min(smallest / 1.5);
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let y_max = points.clone().map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let y_min = points
        .clone()
        .map(|p| p.1)
        .filter(|y| *y > 0.0)
        .fold(f64::MAX, f64::min)
        .min(y_max / 10.0)
        / 1.5;
    // The legend beside the chart, where it covers no line.
    let (area, legend) = if labels {
        let (w, _) = area.dim_in_pixel();
        let (chart, legend) = area.split_horizontally(w.saturating_sub(LEGEND_WIDTH));
        (chart, Some(legend))
    } else {
        (area.clone(), None)
    };
    let mut builder = ChartBuilder::on(&area);
    builder.margin(16);
    if labels {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(44)
            .y_label_area_size(64);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    // Both sides logarithmic: sizes from 10 to 10 000, and values that span orders of
    // magnitude between scenarios and tiers (a file against a job, a model against real nodes).
    let mut chart = builder
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    // Whole numbers of nodes, few enough not to run into each other.
    let whole = |x: &f64| format!("{x:.0}");
    let value = |y: &f64| short(*y);
    mesh.x_label_formatter(&whole)
        .x_labels(6)
        .y_label_formatter(&value)
        .y_labels(8);
    if labels {
        mesh.x_desc("nodes").y_desc(y_label);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    // One colour per tier and scenario; its job line dashed, its results line solid.
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = series.keys().map(|name| group_of(name)).collect();
        g.dedup();
        g
    };
    let look_of = |name: &str| {
        look(
            groups
                .iter()
                .position(|g| *g == group_of(name))
                .unwrap_or(0),
        )
    };
    let color_of = |name: &str| look_of(name).0.to_rgba();
    for (name, points) in series {
        let (colour, marker) = look_of(name);
        let color = colour.to_rgba();
        let style = color.stroke_width(2);
        if name.ends_with(": job") {
            chart
                .draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, style))
                .map_err(|e| e.to_string())?;
        } else {
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(points.iter().map(|&p| marker.at(p, color)))
            .map_err(|e| e.to_string())?;
    }
    if let Some(legend) = legend {
        let font = ("sans-serif", 13).into_font().color(&BLACK);
        // 18 px a line, closer when there are many (two tiers of every scenario).
        let (_, h) = legend.dim_in_pixel();
        let step = (h.saturating_sub(50) / series.len().max(1) as u32).clamp(8, 18) as i32;
        for (i, name) in series.keys().enumerate() {
            let y = 40 + step * i as i32;
            let style = color_of(name).stroke_width(2);
            let sample = if name.ends_with(": job") {
                vec![(4, y), (12, y)]
            } else {
                vec![(4, y), (26, y)]
            };
            legend
                .draw(&PathElement::new(sample, style))
                .map_err(|e| e.to_string())?;
            if name.ends_with(": job") {
                legend
                    .draw(&PathElement::new(vec![(18, y), (26, y)], style))
                    .map_err(|e| e.to_string())?;
            }
            // The marker after the line (on it, it would fill a dashed line's gap).
            legend
                .draw(&look_of(name).1.at((32, y), color_of(name)))
                .map_err(|e| e.to_string())?;
            legend
                .draw(&Text::new(name.clone(), (40, y - 7), font.clone()))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The colour and marker of the `i`th tier and scenario: the colours in turn, then again with
/// another marker (two tiers of every scenario are more groups than there are colours).
fn look(i: usize) -> (RGBColor, Marker) {
    let marker = match (i / COLOURS.len()) % 3 {
        0 => Marker::Circle,
        1 => Marker::Triangle,
        _ => Marker::Cross,
    };
    (COLOURS[i % COLOURS.len()], marker)
}

/// The mark at each measured point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Marker {
    Circle,
    Triangle,
    Cross,
}

impl Marker {
    /// This marker at `at`, in `color`.
    fn at<DB, C>(self, at: C, color: RGBAColor) -> DynElement<'static, DB, C>
    where
        DB: DrawingBackend,
        C: Clone + 'static,
    {
        match self {
            Marker::Circle => Circle::new(at, 3, color.filled()).into_dyn(),
            Marker::Triangle => TriangleMarker::new(at, 5, color.filled()).into_dyn(),
            Marker::Cross => Cross::new(at, 4, color.stroke_width(2)).into_dyn(),
        }
    }
}

/// How wide the legend beside each chart is, in pixels.
const LEGEND_WIDTH: u32 = 250;

/// The tier and scenario a series belongs to (`tier 1 fanout` of `tier 1 fanout: job`).
fn group_of(name: &str) -> &str {
    name.split(": ").next().unwrap_or(name)
}

/// `v` with three significant digits at most, without trailing zeros (0.6, not
/// 0.600000000001; 10000, not 10000.0).
fn short(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return format!("{v}");
    }
    let decimals = (2 - v.log10().floor() as i32).clamp(0, 9) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tier and scenario looks different, past the ten colours too.
    #[test]
    fn groups_are_told_apart_past_the_colours() {
        let looks: std::collections::HashSet<(RGBColor, Marker)> = (0..30).map(look).collect();
        assert_eq!(looks.len(), 30);
    }

    /// A file that cannot be written is said as the system says it, with no debug format.
    #[test]
    fn a_plot_that_cannot_be_written_says_why_plainly() {
        let rows = [crate::metrics::Report {
            tier: 1,
            ..Default::default()
        }
        .summary()];
        let e = draw(&rows, Path::new("/dev/full")).unwrap_err();
        assert!(e.starts_with("No space left on device"), "{e}");
        assert!(!e.contains('{') && !e.contains("Error("), "{e}");
        // Drawn in full where it can be written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        draw(&rows, &path).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 1000, "{} bytes", png.len());
    }

    #[test]
    fn values_are_labelled_short() {
        assert_eq!(short(0.600000000001), "0.6");
        assert_eq!(short(10000.0), "10000");
        assert_eq!(short(0.003), "0.003");
        assert_eq!(short(12.345), "12.3");
        assert_eq!(short(0.0), "0");
    }
}
