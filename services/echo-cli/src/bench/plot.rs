//! The latency percentile plot of `echo-client bench --plot`: latency against
//! percentile, the percentile axis in "nines" (log scale of 1 / (1 - q)), so
//! that the tail is as wide as the body. Drawn as SVG, and rasterised to PNG
//! with resvg when a PNG is asked for, its text in a font built into the
//! binary (Noto Sans), so that the labels are drawn the same on every machine,
//! fonts installed or not.

use std::fmt::Write;

use hdrhistogram::Histogram;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The tail reaches p99.999.
const NINES: f64 = 5.0;

/// The SVG document of `latency` (microseconds), titled `title`.
pub(super) fn svg(latency: &Histogram<u64>, title: &str) -> String {
    let (plot_width, plot_height) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    // Ten points per nine.
    let points: Vec<(f64, f64)> = (0..=(NINES * 10.0) as u32)
        .map(|step| {
            let nines = f64::from(step) / 10.0;
            let quantile = 1.0 - 10f64.powf(-nines);
            (nines, latency.value_at_quantile(quantile) as f64 / 1000.0)
        })
        .collect();
    let top_ms = nice_ceiling(points.iter().map(|&(_, ms)| ms).fold(0.0, f64::max));
    let x = |nines: f64| LEFT + nines / NINES * plot_width;
    let y = |ms: f64| TOP + plot_height - ms / top_ms * plot_height;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (nines, label) in ["p0", "p90", "p99", "p99.9", "p99.99", "p99.999"]
        .iter()
        .enumerate()
    {
        let at = x(nines as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{:.1}" stroke="#ddd"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 20.0
        );
    }
    for tick in 0..=5 {
        let ms = top_ms * f64::from(tick) / 5.0;
        let at = y(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{at:.1}" x2="{:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_width,
            LEFT - 8.0,
            at + 4.0,
            format_ms(ms)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        TOP + plot_height / 2.0
    );
    let path: Vec<String> = points
        .iter()
        .map(|&(nines, ms)| format!("{:.1},{:.1}", x(nines), y(ms)))
        .collect();
    let _ = writeln!(
        out,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        path.join(" ")
    );
    out.push_str("</svg>\n");
    out
}

/// The SVG bar chart of `latency` (microseconds): calls per latency bucket,
/// the buckets doubling in width from 0.1 ms.
pub(super) fn histogram_svg(latency: &Histogram<u64>) -> String {
    let buckets: Vec<(f64, u64)> = latency
        .iter_log(100, 2.0)
        .map(|bucket| {
            (
                (bucket.value_iterated_to() + 1) as f64 / 1000.0,
                bucket.count_since_last_iteration(),
            )
        })
        .collect();
    let (plot_width, plot_height) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let most = buckets
        .iter()
        .map(|&(_, count)| count)
        .max()
        .unwrap_or(0)
        .max(1);
    let width = plot_width / buckets.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, &(up_to_ms, count)) in buckets.iter().enumerate() {
        let x = LEFT + width * index as f64;
        let height = count as f64 / most as f64 * plot_height;
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{height:.1}" fill="#1f77b4"><title>up to {} ms: {count} calls</title></rect>"##,
            x + 1.0,
            TOP + plot_height - height,
            (width - 2.0).max(1.0),
            format_ms(up_to_ms),
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x + width / 2.0,
            TOP + plot_height + 16.0,
            format_ms(up_to_ms)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">latency up to (ms)</text><text transform="translate(22 {}) rotate(-90)" text-anchor="middle">calls (most: {most})</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 15.0,
        TOP + plot_height / 2.0
    );
    out.push_str("</svg>\n");
    out
}

/// `svg` rasterised as PNG bytes.
pub(super) fn png(svg: &str) -> anyhow::Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_str(svg, &svg_options())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| anyhow::anyhow!("cannot allocate a {size:?} image"))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    Ok(pixmap.encode_png()?)
}

/// Parsing options whose only font is the built-in one: a machine without
/// fonts (a container, a minimal CI image) would otherwise lose every label,
/// and one with fonts would draw them differently.
fn svg_options() -> resvg::usvg::Options<'static> {
    let mut options = resvg::usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_font_data(ttf_noto_sans::REGULAR.to_vec());
    fonts.set_sans_serif_family(FONT_FAMILY);
    options.font_family = FONT_FAMILY.to_owned();
    options
}

/// The family name inside `ttf_noto_sans::REGULAR`.
const FONT_FAMILY: &str = "Noto Sans";

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_ms(ms: f64) -> String {
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

pub(super) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_rises_with_the_percentile_and_fits_the_frame() {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in 1..=10_000 {
            latency.record(micros).unwrap();
        }
        let svg = svg(&latency, "a <test>");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;test&gt;"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let ys: Vec<f64> = points
            .split(' ')
            .map(|point| point.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(ys.len(), 51);
        // SVG y grows downwards: latency never falls as the percentile rises.
        assert!(ys.windows(2).all(|pair| pair[1] <= pair[0]), "{ys:?}");
        assert!(
            ys.iter().all(|&y| (TOP..=HEIGHT - BOTTOM).contains(&y)),
            "{ys:?}"
        );
        assert_eq!(nice_ceiling(7.3), 10.0);
        assert_eq!(nice_ceiling(0.13), 0.2);
        assert_eq!(format_ms(8.0), "8");
        assert_eq!(format_ms(0.4), "0.4");
    }

    #[test]
    fn the_png_is_the_svg_drawn() {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        latency.record(1_000).unwrap();
        let png = png(&svg(&latency, "one call")).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height as the SVG says.
        assert_eq!(
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            WIDTH as u32
        );
        assert_eq!(
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
            HEIGHT as u32
        );
    }

    /// The text of `svg` as resvg draws it: the outlines of each text node's
    /// glyphs, which are empty when no font has the glyphs.
    fn drawn_text_area(svg: &str) -> f32 {
        fn walk(group: &resvg::usvg::Group, area: &mut f32) {
            for node in group.children() {
                match node {
                    resvg::usvg::Node::Group(group) => walk(group, area),
                    resvg::usvg::Node::Text(text) => {
                        let bounds = text.flattened().abs_bounding_box();
                        *area += bounds.width() * bounds.height();
                    }
                    _ => {}
                }
            }
        }
        let tree = resvg::usvg::Tree::from_str(svg, &svg_options()).unwrap();
        let mut area = 0.0;
        walk(tree.root(), &mut area);
        area
    }

    #[test]
    fn the_labels_are_drawn_with_the_built_in_font_alone() {
        // The only font the renderer knows is the built-in one: no system
        // font is looked up, so this is what a machine without fonts draws.
        let options = svg_options();
        let families: Vec<String> = options
            .fontdb
            .faces()
            .flat_map(|face| face.families.iter().map(|(name, _)| name.clone()))
            .collect();
        assert_eq!(families, [FONT_FAMILY]);

        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        latency.record(1_000).unwrap();
        let with_text = svg(&latency, "unary 64 B, 50x20");
        // Each label became glyph outlines.
        let labels = with_text.matches("</text>").count();
        assert!(labels >= 10, "{labels} labels");
        assert!(drawn_text_area(&with_text) > 1_000.0);
        // And they are in the picture: it differs from one without them.
        let mut without_text = String::new();
        for line in with_text.lines() {
            let line = match line.find("<text") {
                Some(at) => &line[..at],
                None => line,
            };
            without_text.push_str(line);
            without_text.push('\n');
        }
        assert_eq!(drawn_text_area(&without_text), 0.0);
        assert_ne!(png(&with_text).unwrap(), png(&without_text).unwrap());
    }
}
