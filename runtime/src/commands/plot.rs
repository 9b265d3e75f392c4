//! `runtime plot OUT`: an SVG with the training loss curve (from `OUT/log.jsonl`) and the
//! per-class accuracy against the class's training-set size (from `OUT/metrics.json`), in
//! phases:
//!
//! 1. data: the log's step records and the metrics read (either may be missing, not both);
//! 2. the work: `OUT/plot.svg` drawn.
//!
//! `runtime run` draws the same plot as its last work.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use dscl_runtime::io::out_dir::{LOG_FILE, METRICS_FILE, PLOT_FILE};
use plotters::prelude::*;
use serde_json::Value;

use crate::cli::PlotCommand;

pub fn run(cmd: PlotCommand) -> Result<ExitCode> {
    let path = draw(&cmd.out)?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A named series of `(global step, loss)` points.
type Curve = (String, Vec<(f64, f64)>);

/// Loss points per phase, from a JSON-lines log.
fn loss_curves(log: &Path) -> Result<Vec<Curve>> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut curves: Vec<Curve> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        // A run killed mid-write can leave one cut line; it holds nothing to plot.
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["kind"] != "step" {
            continue;
        }
        let (Some(step), Some(loss)) = (v["global_step"].as_f64(), v["loss"].as_f64()) else {
            continue;
        };
        let phase = v["phase"].as_str().unwrap_or("train").to_string();
        match curves.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, pts)) => pts.push((step, loss)),
            None => curves.push((phase, vec![(step, loss)])),
        }
    }
    Ok(curves)
}

/// Writes `OUT/plot.svg` and returns its path.
pub fn draw(out: &Path) -> Result<PathBuf> {
    // 1. Data.
    let curves = loss_curves(&out.join(LOG_FILE))?;
    let metrics_path = out.join(METRICS_FILE);
    let per_class: Vec<(f64, f64)> = match fs::read_to_string(&metrics_path) {
        Ok(text) => {
            let m: Value = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", metrics_path.display()))?;
            let counts = m["class_counts"].as_array().cloned().unwrap_or_default();
            let accs = m["per_class"].as_array().cloned().unwrap_or_default();
            counts
                .iter()
                .zip(&accs)
                .filter_map(|(n, a)| Some((n.as_f64()?, a.as_f64()?)))
                .collect()
        }
        Err(_) => Vec::new(),
    };
    if curves.is_empty() && per_class.is_empty() {
        bail!(
            "nothing to plot in {}: no logged steps and no metrics.json",
            out.display()
        );
    }
    // 2. The work.
    let path = out.join(PLOT_FILE);
    draw_svg(&path, &curves, &per_class).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    Ok(path)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_svg(path: &Path, curves: &[Curve], per_class: &[(f64, f64)]) -> DrawResult {
    let root = SVGBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN];

    let (x_max, y_min, y_max) = curves.iter().flat_map(|(_, p)| p.iter()).fold(
        (1.0f64, f64::INFINITY, f64::NEG_INFINITY),
        |(x, lo, hi), &(s, l)| (x.max(s), lo.min(l), hi.max(l)),
    );
    let (y_min, y_max) = if y_min.is_finite() {
        (y_min.min(0.0), y_max * 1.05)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(&left)
        .caption("training loss", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, y_min..y_max.max(y_min + 1e-6))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()?;
    for (i, (phase, pts)) in curves.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour))?
            .label(phase.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
    }
    if !curves.is_empty() {
        chart.configure_series_labels().border_style(BLACK).draw()?;
    }

    let n_max = per_class.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("per-class top-1 vs training images", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n_max * 1.05, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("training images of the class")
        .y_desc("top-1 %")
        .draw()?;
    chart.draw_series(
        per_class
            .iter()
            .map(|&(n, a)| Circle::new((n, a), 4, BLUE.filled())),
    )?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_loss_and_per_class_accuracy() {
        let dir = std::env::temp_dir().join(format!("dscl-plot-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut log = String::new();
        for s in 0..20 {
            log.push_str(&format!(
                "{{\"kind\":\"step\",\"phase\":\"stage1\",\"global_step\":{s},\"loss\":{}}}\n",
                5.0 - s as f64 * 0.1
            ));
        }
        log.push_str("{\"kind\":\"epoch\",\"phase\":\"stage1\"}\n");
        fs::write(dir.join("log.jsonl"), log).unwrap();
        fs::write(
            dir.join("metrics.json"),
            r#"{"class_counts":[100,10,1],"per_class":[90.0,50.0,null]}"#,
        )
        .unwrap();
        let path = draw(&dir).unwrap();
        let svg = fs::read_to_string(path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("training loss"));
        assert_eq!(svg.matches("<circle").count(), 2);
        let curves = loss_curves(&dir.join("log.jsonl")).unwrap();
        assert_eq!(curves[0].1.len(), 20);
        fs::remove_dir_all(&dir).unwrap();
    }
}
