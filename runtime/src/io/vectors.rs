//! Reader of loss test-vector files (inputs plus expected outputs, e.g. PyTorch float64).
//!
//! Every malformed input is an error that names the field, and the row and column where it
//! applies: a missing field, a matrix of the wrong shape, a non-finite number, a label out of
//! range.

use crate::io::bounded_read::{read_file, FileKind};
use anyhow::{anyhow, bail, Context, Result};
use dscl_core::loss::host::HostProblem;
use dscl_core::loss::ContrastiveShape;
use serde_json::Value;
use std::path::Path;

/// One test case: the inputs of SupCon, DSCL and PBSD (a full queue) with their
/// hyperparameters, and the expected outputs.
#[derive(Clone, Debug)]
pub struct Vectors {
    pub problem: HostProblem,
    pub temperature: f64,
    pub beta: f64,
    pub expected: Outputs,
}

/// The outputs a vectors file states, in the file's names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outputs {
    pub dscl_loss: f64,
    pub supcon_loss: f64,
    pub pbsd_loss: f64,
    pub dscl_per_anchor: Vec<f64>,
    pub supcon_per_anchor: Vec<f64>,
    pub pbsd_per_crop: Vec<f64>,
    pub grad_q_dscl: Vec<f64>,
    pub grad_q_supcon: Vec<f64>,
    pub grad_q_dscl_anchor_only: Vec<f64>,
    pub grad_q_supcon_anchor_only: Vec<f64>,
    pub grad_students_pbsd: Vec<f64>,
    /// |P(i)| including the augmented view (optional in the file).
    pub positive_counts: Option<Vec<f64>>,
    /// sum_j w_ij of DSCL (optional in the file).
    pub dscl_weight_sums: Option<Vec<f64>>,
}

impl Vectors {
    pub fn from_path(path: &Path) -> Result<Vectors> {
        let bytes = read_file(path, FileKind::Vectors)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("vectors file {} is not UTF-8 text", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in vectors file {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Vectors> {
        let root: Value = serde_json::from_str(text).map_err(|e| explain_parse_error(text, e))?;
        let batch = usize_field(&root, "B")?;
        let dim = usize_field(&root, "d")?;
        let queue_len = usize_field(&root, "K")?;
        let crops = usize_field(&root, "C")?;
        let num_classes = usize_field(&root, "num_classes")?;
        let num_classes = u32::try_from(num_classes)
            .map_err(|_| anyhow!("num_classes: {num_classes} is too large"))?;
        if batch == 0 || dim == 0 || crops == 0 || num_classes == 0 {
            bail!("B, d, C and num_classes must all be at least 1");
        }
        let temperature = f64_field(&root, "T")?;
        if temperature <= 0.0 {
            bail!("T: the temperature must be positive, got {temperature}");
        }
        let beta = f64_field(&root, "beta")?;
        if beta < 0.0 {
            bail!("beta: must be non-negative, got {beta}");
        }

        let inputs = field(&root, "inputs")?;
        let labels = label_vector(inputs, "inputs.labels", batch, num_classes)?;
        let queue_labels = label_vector(inputs, "inputs.queue_labels", queue_len, num_classes)?;
        let outputs = field(&root, "outputs")?;
        let optional = |name: &str, len: usize| -> Result<Option<Vec<f64>>> {
            match outputs.get(name) {
                None => Ok(None),
                Some(_) => vector(outputs, &format!("outputs.{name}"), len).map(Some),
            }
        };
        let expected = Outputs {
            dscl_loss: f64_field(outputs, "dscl_loss")?,
            supcon_loss: f64_field(outputs, "supcon_loss")?,
            pbsd_loss: f64_field(outputs, "pbsd_loss")?,
            dscl_per_anchor: vector(outputs, "outputs.dscl_per_anchor", batch)?,
            supcon_per_anchor: vector(outputs, "outputs.supcon_per_anchor", batch)?,
            pbsd_per_crop: vector(outputs, "outputs.pbsd_per_crop", crops)?,
            grad_q_dscl: matrix(outputs, "outputs.grad_q_dscl", &[batch, dim])?,
            grad_q_supcon: matrix(outputs, "outputs.grad_q_supcon", &[batch, dim])?,
            grad_q_dscl_anchor_only: matrix(
                outputs,
                "outputs.grad_q_dscl_anchor_only",
                &[batch, dim],
            )?,
            grad_q_supcon_anchor_only: matrix(
                outputs,
                "outputs.grad_q_supcon_anchor_only",
                &[batch, dim],
            )?,
            grad_students_pbsd: matrix(
                outputs,
                "outputs.grad_students_pbsd",
                &[crops, batch, dim],
            )?,
            positive_counts: optional("positive_counts", batch)?,
            dscl_weight_sums: optional("dscl_weight_sums", batch)?,
        };
        let problem = HostProblem {
            shape: ContrastiveShape {
                batch,
                dim,
                queue_len,
                num_classes,
            },
            queue_filled: queue_len,
            crops,
            queries: matrix(inputs, "inputs.q", &[batch, dim])?,
            keys: matrix(inputs, "inputs.k", &[batch, dim])?,
            queue: matrix(inputs, "inputs.queue", &[queue_len, dim])?,
            labels,
            queue_labels,
            teachers: matrix(inputs, "inputs.teachers", &[crops, batch, dim])?,
            students: matrix(inputs, "inputs.students", &[crops, batch, dim])?,
        };
        Ok(Vectors {
            problem,
            temperature,
            beta,
            expected,
        })
    }
}

/// serde_json rejects the `NaN` / `Infinity` tokens Python writes; say so plainly.
fn explain_parse_error(text: &str, err: serde_json::Error) -> anyhow::Error {
    let (line, column) = (err.line(), err.column());
    // serde_json points at (or just past) the start of the bad token: take the whole word
    // around that column.
    let row: Vec<char> = text
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or_default()
        .chars()
        .collect();
    let is_word = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.');
    let mut start = column.saturating_sub(1).min(row.len());
    while start > 0 && is_word(&row[start - 1]) {
        start -= 1;
    }
    let at: String = row[start..].iter().take_while(|c| is_word(c)).collect();
    if ["NaN", "Infinity", "-Infinity", "inf", "nan", "-inf"].contains(&at.as_str()) {
        anyhow!(
            "non-finite value `{at}` at line {line} column {column}: every number must be finite"
        )
    } else {
        anyhow!("malformed JSON at line {line} column {column}: {err}")
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name).ok_or_else(|| anyhow!("missing field `{name}`"))
}

fn usize_field(v: &Value, name: &str) -> Result<usize> {
    field(v, name)?
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| anyhow!("field `{name}` must be a non-negative integer"))
}

fn f64_field(v: &Value, name: &str) -> Result<f64> {
    let x = field(v, name)?
        .as_f64()
        .ok_or_else(|| anyhow!("field `{name}` must be a number"))?;
    if !x.is_finite() {
        bail!("field `{name}` is not finite");
    }
    Ok(x)
}

/// A nested list of numbers with exactly `shape`, flattened row-major. `path` names the
/// field in messages, e.g. `inputs.q[3][5]`.
fn matrix(parent: &Value, path: &str, shape: &[usize]) -> Result<Vec<f64>> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let value = parent
        .get(name)
        .ok_or_else(|| anyhow!("missing field `{path}`"))?;
    // The header's sizes are untrusted: a product that overflows cannot match any list, and
    // the reservation is capped so a huge stated size costs nothing before it is refuted.
    let len = shape
        .iter()
        .try_fold(1usize, |n, &dim| n.checked_mul(dim))
        .ok_or_else(|| anyhow!("`{path}`: the shape {shape:?} is too large"))?;
    let mut out = Vec::with_capacity(len.min(MAX_RESERVED_VALUES));
    flatten(value, path, shape, &mut out)?;
    Ok(out)
}

/// Values reserved up front for one matrix: enough for every real vectors file.
const MAX_RESERVED_VALUES: usize = 1 << 16;

fn vector(parent: &Value, path: &str, len: usize) -> Result<Vec<f64>> {
    matrix(parent, path, &[len])
}

fn flatten(value: &Value, at: &str, shape: &[usize], out: &mut Vec<f64>) -> Result<()> {
    match shape.split_first() {
        None => {
            let x = value
                .as_f64()
                .ok_or_else(|| anyhow!("`{at}` must be a number"))?;
            if !x.is_finite() {
                bail!("`{at}` is not finite");
            }
            out.push(x);
            Ok(())
        }
        Some((&len, rest)) => {
            let items = value
                .as_array()
                .ok_or_else(|| anyhow!("`{at}` must be a list"))?;
            if items.len() != len {
                bail!("`{at}` has {} entries, expected {len}", items.len());
            }
            for (i, item) in items.iter().enumerate() {
                flatten(item, &format!("{at}[{i}]"), rest, out)?;
            }
            Ok(())
        }
    }
}

fn label_vector(parent: &Value, path: &str, len: usize, num_classes: u32) -> Result<Vec<u32>> {
    let values = vector(parent, path, len)?;
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if x.fract() != 0.0 || x < 0.0 {
                bail!("`{path}[{i}]` must be a non-negative integer label, got {x}");
            }
            if x >= num_classes as f64 {
                bail!(
                    "`{path}[{i}]` = {x} is outside the labels 0 to {} (num_classes {num_classes})",
                    num_classes.saturating_sub(1)
                );
            }
            Ok(x as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = include_str!("../../../tests/data/dscl_vectors_small.json");

    #[test]
    fn reads_the_shipped_file() {
        let v = Vectors::from_json(SMALL).unwrap();
        let p = &v.problem;
        let s = p.shape;
        assert_eq!((s.batch, s.dim, s.queue_len, p.crops), (8, 16, 32, 2));
        assert_eq!(p.queue_filled, 32);
        assert_eq!(p.queries.len(), 8 * 16);
        assert_eq!(p.teachers.len(), 2 * 8 * 16);
        assert_eq!(v.expected.dscl_loss, 7.534316699220439);
    }

    fn edited(f: impl FnOnce(&mut Value)) -> String {
        let mut root: Value = serde_json::from_str(SMALL).unwrap();
        f(&mut root);
        root.to_string()
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Vectors::from_json(text).unwrap_err())
    }

    #[test]
    fn names_a_missing_field() {
        let text = edited(|r| {
            r["inputs"].as_object_mut().unwrap().remove("queue");
        });
        assert!(error_of(&text).contains("missing field `inputs.queue`"));
    }

    #[test]
    fn names_the_row_of_wrong_length() {
        let text = edited(|r| {
            r["inputs"]["k"][3].as_array_mut().unwrap().pop();
        });
        assert!(error_of(&text).contains("`inputs.k[3]` has 15 entries, expected 16"));
    }

    #[test]
    fn names_a_non_finite_value() {
        let text = SMALL.replacen("\"T\": 0.07", "\"T\": NaN", 1);
        assert_ne!(text, SMALL, "the fixture's temperature field moved");
        assert!(error_of(&text).contains("non-finite value `NaN`"));
        let text = edited(|r| r["inputs"]["q"][0][0] = Value::from("x"));
        assert!(error_of(&text).contains("`inputs.q[0][0]` must be a number"));
    }

    #[test]
    fn huge_stated_sizes_are_refused_without_allocating() {
        let text = edited(|r| r["K"] = Value::from(u64::MAX));
        let e = error_of(&text);
        assert!(e.contains("`inputs.queue_labels` has 32 entries"), "{e}");
        let text = edited(|r| r["d"] = Value::from(u64::MAX / 2));
        let e = error_of(&text);
        assert!(e.contains("`outputs.grad_q_dscl`: the shape"), "{e}");
    }

    #[test]
    fn names_a_label_out_of_range() {
        let text = edited(|r| r["inputs"]["queue_labels"][5] = Value::from(9));
        assert!(
            error_of(&text).contains("`inputs.queue_labels[5]` = 9 is outside the labels 0 to 3")
        );
    }
}
