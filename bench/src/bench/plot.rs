//! The cost plot (SVG, written by hand): service CPU per sample against container processes for
//! both trackers, from the container sweep, with the floors measured in the same run dashed
//! (back to back and at the service's cadence) and the peer (prometheus-process-exporter, per
//! scrape and per process it listed). Left panel: µs per sample; right panel: µs per container
//! process per sample; both on a logarithmic scale.

use std::fmt::Write as _;

use super::{PointResult, Settings, Tracker, floor::Floor, report};

const W: f64 = 960.0;
const H: f64 = 500.0;
const PANEL_W: f64 = 400.0;
const PANEL_H: f64 = 300.0;
const TOP: f64 = 70.0;

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// (container processes, µs per sample, µs per container process per sample)
    points: Vec<(f64, f64, f64)>,
}

/// A point's x: the container processes on the host, as the floor's /proc scan found them (the
/// benchmark's own plus any others'; what the service tracks too).
fn x_of(p: &PointResult) -> f64 {
    p.floor
        .procfs_in_containers
        .max(p.shape.container_processes())
        .max(1) as f64
}

/// The SVG text, or None when the container sweep did not run (fewer than two sizes).
pub fn svg(results: &[PointResult], settings: &Settings) -> Option<String> {
    if !settings.plot_written(results) {
        return None;
    }
    let points = report::container_sweep(results, settings);
    let mut series = Vec::new();
    for (tracker, color) in [(Tracker::Ebpf, "#1f77b4"), (Tracker::Procfs, "#d62728")] {
        let pts: Vec<(f64, f64, f64)> = points
            .iter()
            .filter_map(|p| {
                let w = &p.run(tracker)?.window;
                Some((x_of(p), w.us_per_sample(), w.us_per_process()))
            })
            .collect();
        if !pts.is_empty() {
            series.push(Series {
                label: format!("service, --tracker {tracker}"),
                color,
                dashed: false,
                points: pts,
            });
        }
    }
    // The per-process floors: per sample is per process × processes.
    let per_process = |label: &str, color, us: fn(&Floor) -> f64| Series {
        label: label.into(),
        color,
        dashed: true,
        points: points
            .iter()
            .map(|p| (x_of(p), us(&p.floor) * x_of(p), us(&p.floor)))
            .collect(),
    };
    series.push(per_process(
        "floor: stat+status pread, once a period (cadence)",
        "#2ca02c",
        Floor::cadence_us,
    ));
    series.push(per_process(
        "floor: the same with each container's cgroup files (cadence)",
        "#8c564b",
        Floor::cadence_with_cgroups_us,
    ));
    series.push(per_process(
        "floor: stat+status reads back to back (service design)",
        "#1f77b4",
        Floor::design_us,
    ));
    series.push(Series {
        label: "floor: procfs scan (readdir + cgroup + stat/status)".into(),
        color: "#d62728",
        dashed: true,
        points: points
            .iter()
            .map(|p| {
                let x = x_of(p);
                (x, p.floor.procfs_round_us(), p.floor.procfs_round_us() / x)
            })
            .collect(),
    });

    let peer: Vec<(f64, f64, f64)> = points
        .iter()
        .filter_map(|p| {
            let peer = p.peer.as_ref()?.as_ref().ok()?;
            Some((x_of(p), peer.us_per_scrape(), peer.us_per_process()))
        })
        .collect();
    if !peer.is_empty() {
        series.push(Series {
            label: "peer: process-exporter, per scrape / per process listed".into(),
            color: "#9467bd",
            dashed: false,
            points: peer,
        });
    }
    let hosts = points.first().map_or(0, |p| p.shape.hosts);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">companion: service CPU per sample against container processes ({} host processes, {} period)</text>"#,
        W / 2.0,
        hosts,
        humantime::format_duration(settings.period)
    );
    let xmax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    panel(
        &mut out,
        70.0,
        &series,
        xmax,
        |p| p.1,
        "CPU per sample (µs, log scale)",
    );
    panel(
        &mut out,
        70.0 + PANEL_W + 80.0,
        &series,
        xmax,
        |p| p.2,
        "CPU per container process per sample (µs, log scale)",
    );
    // legend
    let mut y = TOP + PANEL_H + 55.0;
    let mut x = 70.0;
    for s in &series {
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{}/>"#,
            x + 24.0,
            s.color,
            if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x + 30.0,
            y + 4.0,
            escape(&s.label)
        );
        x += 430.0;
        if x > W - 200.0 {
            x = 70.0;
            y += 18.0;
        }
    }
    out.push_str("</svg>\n");
    Some(out)
}

fn panel(
    out: &mut String,
    left: f64,
    series: &[Series],
    xmax: f64,
    value: impl Fn(&(f64, f64, f64)) -> f64,
    title: &str,
) {
    // A logarithmic y axis, by decades: the peer costs hundreds of times what the service does.
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(&value))
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = decades(&values);
    let (xstep, xtop) = nice(xmax);
    let sx = |x: f64| left + x / xtop * PANEL_W;
    let sy = |y: f64| {
        let y = y.max(10f64.powi(lo));
        TOP + PANEL_H - (y.log10() - f64::from(lo)) / f64::from(hi - lo) * PANEL_H
    };
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
        left + PANEL_W / 2.0,
        TOP - 12.0,
        escape(title)
    );
    for decade in lo..=hi {
        let t = 10f64.powi(decade);
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let mut t = 0.0;
    while t <= xtop + xstep / 2.0 {
        let x = sx(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#e0e0e0"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP,
            TOP + PANEL_H,
            TOP + PANEL_H + 16.0,
            label(t)
        );
        t += xstep;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">container processes on the host</text>"#,
        left + PANEL_W / 2.0,
        TOP + PANEL_H + 34.0
    );
    for s in series {
        let mut pts = s.points.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(value(p))))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>"#,
            path.join(" "),
            s.color,
            if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            }
        );
        if !s.dashed {
            for p in &pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{:.0} processes: {:.2} µs</title></circle>"#,
                    sx(p.0),
                    sy(value(p)),
                    s.color,
                    p.0,
                    value(p)
                );
            }
        }
    }
}

/// The decades (powers of ten) around the positive `values`: (lowest, highest).
fn decades(values: &[f64]) -> (i32, i32) {
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return (0, 1);
    }
    let lo = min.log10().floor() as i32;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// A tick step of 1, 2 or 5 × 10^k giving about five ticks, and the axis top (a multiple of it).
fn nice(max: f64) -> (f64, f64) {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil() * step)
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        let m = format!("{:.1}", v / 1e6);
        format!("{}M", m.trim_end_matches(".0"))
    } else if v >= 1000.0 {
        let k = format!("{:.1}", v / 1000.0);
        format!("{}k", k.trim_end_matches(".0"))
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks() {
        assert_eq!(nice(20000.0), (5000.0, 20000.0));
        assert_eq!(nice(7.3), (2.0, 8.0));
        assert_eq!(nice(0.0), (0.2, 1.0));
        assert_eq!(label(5000.0), "5k");
        assert_eq!(label(2.5), "2.5");
        assert_eq!(label(1500.0), "1.5k");
        assert_eq!(label(20000.0), "20k");
        assert_eq!(label(1e7), "10M");
        assert_eq!(decades(&[3.0, 950.0]), (0, 3));
        assert_eq!(decades(&[10.0]), (1, 2));
    }
}
