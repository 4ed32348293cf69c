//! `ferrovs bench --sweep`: the bench scenarios over a grid of flow counts
//! and worker counts, written as a CSV and an SVG plot (plotters' SVG
//! backend: text is emitted as SVG `<text>`, no font files are needed).

use crate::tools::bench::{self, BenchArgs, BenchReport, Scenario};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct SweepArgs {
    pub flows: Vec<usize>,
    pub workers: Vec<usize>,
    pub scenarios: Vec<Scenario>,
    /// Measured packets per point (total over workers).
    pub packets: u64,
    pub size: usize,
    pub pin: bool,
    /// Writes `out.csv` and `out.svg`.
    pub out: PathBuf,
    /// Shown in the plot's title.
    pub machine: String,
}

/// One measured point.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub scenario: Scenario,
    pub workers: usize,
    pub flows: usize,
    pub packets: u64,
    pub mpps: f64,
    pub ns_per_packet: f64,
    pub new_flows_per_sec: f64,
    pub bytes_per_flow: f64,
}

impl Point {
    pub fn of(r: &BenchReport) -> Point {
        Point {
            scenario: r.scenario,
            workers: r.workers,
            flows: r.flows,
            packets: r.packets,
            mpps: r.mpps_total,
            ns_per_packet: r.ns_per_packet,
            new_flows_per_sec: r.new_flows_per_sec,
            bytes_per_flow: r.table_bytes_per_flow,
        }
    }
}

pub fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Established => "established",
        Scenario::Established6 => "established6",
        Scenario::New => "new",
        Scenario::Dr => "dr",
        Scenario::Fnat => "fnat",
        Scenario::Ftp => "ftp",
        Scenario::FtpData => "ftp-data",
        Scenario::Synflood => "synflood",
        Scenario::FloodUnknown => "flood-unknown",
        Scenario::FloodIcmp => "flood-icmp",
        Scenario::FloodArp => "flood-arp",
        Scenario::FloodNd => "flood-nd",
        Scenario::FloodFtpTiny => "flood-ftp-tiny",
    }
}

/// "CPU model, N vCPUs" from /proc/cpuinfo (what `lscpu` shows as Model name).
pub fn machine_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model}, {cpus} vCPUs")
}

pub const CSV_HEADER: &str = "scenario,workers,flows,packets,mpps,ns_per_packet,new_flows_per_sec,bytes_per_flow";

pub fn csv(points: &[Point]) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for p in points {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.3},{:.1},{:.0},{:.0}",
            scenario_name(p.scenario),
            p.workers,
            p.flows,
            p.packets,
            p.mpps,
            p.ns_per_packet,
            p.new_flows_per_sec,
            p.bytes_per_flow
        );
    }
    s
}

/// The plot: Mpps (log10 flows on x), one line per scenario and worker count.
pub fn svg(points: &[Point], title: &str) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let fmin = points.iter().map(|p| p.flows).min().unwrap_or(10_000).max(1) as f64;
        let fmax = points.iter().map(|p| p.flows).max().unwrap_or(10_000_000).max(2) as f64;
        let (fmin, fmax) = if fmax <= fmin { (fmin / 2.0, fmin * 2.0) } else { (fmin / 1.5, fmax * 1.5) };
        let ymax = points.iter().map(|p| p.mpps).fold(0.0f64, f64::max).max(0.1) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((fmin..fmax).log_scale(), 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("flows in the table (log scale)")
            .y_desc("Mpps (64-byte frames, all workers)")
            .x_label_formatter(&|v| {
                if *v >= 1e6 {
                    format!("{:.0}M", v / 1e6)
                } else if *v >= 1e3 {
                    format!("{:.0}k", v / 1e3)
                } else {
                    format!("{v:.0}")
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        let mut series: Vec<(Scenario, usize)> = points.iter().map(|p| (p.scenario, p.workers)).collect();
        series.sort_by_key(|(s, w)| (scenario_name(*s), *w));
        series.dedup();
        for (i, (sc, w)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.scenario == *sc && p.workers == *w)
                .map(|p| (p.flows as f64, p.mpps))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = format!("{} ({} worker{})", scenario_name(*sc), w, if *w == 1 { "" } else { "s" });
            let style = ShapeStyle { color, filled: true, stroke_width: if *w == 1 { 2 } else { 3 } };
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, style))).map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Run the sweep, print one line per point, write the CSV and the SVG.
pub fn run(a: &SweepArgs) -> Result<(), String> {
    if a.flows.is_empty() || a.workers.is_empty() || a.scenarios.is_empty() {
        return Err("--sweep needs at least one flow count, worker count and scenario".into());
    }
    let mut points = Vec::new();
    for &sc in &a.scenarios {
        for &w in &a.workers {
            for &f in &a.flows {
                let args = BenchArgs {
                    scenario: sc,
                    flows: f,
                    packets: a.packets,
                    workers: w,
                    size: a.size,
                    pin: a.pin,
                    flood_only: false,
                    frames: 0,
                };
                let r = bench::run(&args)?;
                let p = Point::of(&r);
                println!(
                    "{:<12} workers {} flows {:>9}: {:8.2} Mpps {:7.1} ns/packet",
                    scenario_name(sc),
                    w,
                    f,
                    p.mpps,
                    p.ns_per_packet
                );
                points.push(p);
            }
        }
    }
    let csv_path = a.out.with_extension("csv");
    let svg_path = a.out.with_extension("svg");
    if let Some(d) = csv_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(&csv_path, csv(&points)).map_err(|e| format!("{}: {e}", csv_path.display()))?;
    let title = format!("ferrovs bench ({}-byte frames, {} packets per point) on {}", a.size, a.packets, a.machine);
    std::fs::write(&svg_path, svg(&points, &title)?).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    println!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(sc: Scenario, w: usize, f: usize, mpps: f64) -> Point {
        Point {
            scenario: sc,
            workers: w,
            flows: f,
            packets: 1000,
            mpps,
            ns_per_packet: 1e3 / mpps,
            new_flows_per_sec: 0.0,
            bytes_per_flow: 288.0,
        }
    }

    #[test]
    fn csv_has_one_row_per_point() {
        let p = [pt(Scenario::Established, 1, 10_000, 30.0), pt(Scenario::Dr, 2, 1_000_000, 11.5)];
        let c = csv(&p);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "established,1,10000,1000,30.000,33.3,0,288");
        assert!(lines[2].starts_with("dr,2,1000000,"));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn svg_has_a_line_and_a_legend_entry_per_series() {
        let p = [
            pt(Scenario::Established, 1, 10_000, 30.0),
            pt(Scenario::Established, 1, 100_000, 20.0),
            pt(Scenario::Established, 2, 10_000, 50.0),
            pt(Scenario::Established, 2, 100_000, 40.0),
        ];
        let s = svg(&p, "test & <title>").unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..80.min(s.len())]);
        assert_eq!(s.matches("<circle").count(), 4, "one marker per point");
        assert!(s.matches("<polyline").count() >= 2, "a line per series");
        assert!(s.contains("established (1 worker)") && s.contains("established (2 workers)"));
        assert!(s.contains("test &amp; &lt;title&gt;"), "the title is escaped");
        assert!(s.contains("flows in the table"));
    }

    #[test]
    fn tiny_sweep_writes_csv_and_svg() {
        let dir = std::env::temp_dir().join(format!("fvs-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = SweepArgs {
            flows: vec![1000, 4000],
            workers: vec![1],
            scenarios: vec![Scenario::Established, Scenario::New],
            packets: 20_000,
            size: 64,
            pin: false,
            out: dir.join("sweep"),
            machine: "test".into(),
        };
        run(&a).unwrap();
        let c = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
        assert_eq!(c.lines().count(), 1 + 4);
        for l in c.lines().skip(1) {
            let mpps: f64 = l.split(',').nth(4).unwrap().parse().unwrap();
            assert!(mpps > 0.0, "{l}");
        }
        assert!(std::fs::read_to_string(dir.join("sweep.svg")).unwrap().contains("new (1 worker)"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
