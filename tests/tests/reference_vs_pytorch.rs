//! `ReferenceBackend<f64>` against independent PyTorch / torchvision float64 results, kernel by
//! kernel: tests/data/kernel_vectors.json, written by tests/pytorch/make_kernel_vectors.py (see
//! its header to regenerate).
//!
//! Tolerance: 1e-10 relative; entries below 1e-3 of their array's largest magnitude (where
//! summation order alone moves the last bits of a cancelling sum) are held to 1e-13 of that
//! largest magnitude instead. Run with `--nocapture` to see the worst error of every quantity.

use dscl_core::backend::prelude::*;
use dscl_core::desc::{
    BatchNormShape, ContrastiveRowsDesc, Conv2dShape, PoolShape, PositiveWeighting, RoiAlignShape,
    RowsDesc, SgdParams,
};
use dscl_core::reference::{ReferenceBackend, ReferenceBuffer, ReferenceIndexBuffer};
use serde::Deserialize;

const VECTORS: &str = include_str!("../data/kernel_vectors.json");
const REL_TOL: f64 = 1e-10;
/// Below this fraction of an array's largest magnitude an entry is judged absolutely.
const NEAR_ZERO: f64 = 1e-3;

type Reference = ReferenceBackend<f64>;

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("tests/data/kernel_vectors.json parses")
}

fn buffer(values: &[f64]) -> ReferenceBuffer<f64> {
    ReferenceBuffer::from_vec(values.to_vec())
}

/// A buffer of `len` NaNs, so a kernel that leaves an output element unwritten is caught.
fn poisoned(len: usize) -> ReferenceBuffer<f64> {
    ReferenceBuffer::from_vec(vec![f64::NAN; len])
}

fn labels(values: &[u32]) -> ReferenceIndexBuffer {
    ReferenceIndexBuffer::from_vec(values.to_vec())
}

/// Compares `got` with PyTorch's `expected`, prints the worst error, panics past the tolerance.
fn assert_close(what: &str, got: &[f64], expected: &[f64]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let largest = expected.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    let floor = NEAR_ZERO * largest;
    let mut worst = (0.0f64, 0usize);
    let mut worst_abs = 0.0f64;
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let abs = (g - e).abs();
        let scaled = if abs == 0.0 {
            0.0
        } else {
            abs / e.abs().max(floor)
        };
        assert!(!scaled.is_nan(), "{what}[{i}]: got {g}, expected {e}");
        if scaled > worst.0 {
            worst = (scaled, i);
        }
        worst_abs = worst_abs.max(abs);
    }
    println!(
        "{what:<58} max rel {:9.2e}  max abs {:9.2e}  (n = {})",
        worst.0,
        worst_abs,
        expected.len()
    );
    let (err, i) = worst;
    assert!(
        err <= REL_TOL,
        "{what}[{i}]: got {}, expected {}, scaled error {err:e}",
        got[i],
        expected[i]
    );
}

fn assert_no_fault(backend: &Reference, what: &str) {
    assert_eq!(
        backend.take_fault().unwrap(),
        None,
        "{what}: unexpected fault"
    );
}

#[derive(Deserialize)]
struct Vectors {
    conv2d: Vec<Conv2dCase>,
    batch_norm: Vec<BatchNormCase>,
    max_pool2d: Vec<MaxPoolCase>,
    global_avg_pool: Vec<GlobalAvgPoolCase>,
    roi_align: Vec<RoiAlignCase>,
    l2_normalize: Vec<L2NormalizeCase>,
    softmax: Vec<SoftmaxCase>,
    hard_cross_entropy: Vec<HardCrossEntropyCase>,
    soft_cross_entropy: Vec<SoftCrossEntropyCase>,
    contrastive: Vec<ContrastiveCase>,
    sgd: Vec<SgdCase>,
}

// ---- convolution ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Conv2dCase {
    name: String,
    batch: usize,
    in_channels: usize,
    in_height: usize,
    in_width: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    input: Vec<f64>,
    weight: Vec<f64>,
    grad_output: Vec<f64>,
    output: Vec<f64>,
    grad_input: Vec<f64>,
    grad_weight: Vec<f64>,
}

#[test]
fn conv2d_forward_and_both_backwards_match_torch() {
    let backend = Reference::new();
    for case in vectors().conv2d {
        let shape = Conv2dShape {
            batch: case.batch,
            in_channels: case.in_channels,
            in_height: case.in_height,
            in_width: case.in_width,
            out_channels: case.out_channels,
            kernel_h: case.kernel,
            kernel_w: case.kernel,
            stride: case.stride,
            padding: case.padding,
        };
        let name = &case.name;
        let (input, weight) = (buffer(&case.input), buffer(&case.weight));
        let grad_output = buffer(&case.grad_output);
        let mut workspace = backend.alloc(backend.conv2d_workspace_len(&shape)).unwrap();

        let mut output = poisoned(shape.output_len());
        backend
            .conv2d_forward(&shape, &input, &weight, &mut output, &mut workspace)
            .unwrap();
        assert_close(
            &format!("conv2d {name}: output"),
            output.as_slice(),
            &case.output,
        );

        let mut grad_input = poisoned(shape.input_len());
        backend
            .conv2d_backward_data(
                &shape,
                &grad_output,
                &weight,
                &mut grad_input,
                &mut workspace,
            )
            .unwrap();
        assert_close(
            &format!("conv2d {name}: grad_input"),
            grad_input.as_slice(),
            &case.grad_input,
        );

        // The filter gradient accumulates: twice from zero is twice PyTorch's.
        let mut grad_weight = backend.alloc(shape.weight_len()).unwrap();
        for _ in 0..2 {
            backend
                .conv2d_backward_filter(
                    &shape,
                    &input,
                    &grad_output,
                    &mut grad_weight,
                    &mut workspace,
                )
                .unwrap();
        }
        let twice: Vec<f64> = case.grad_weight.iter().map(|g| 2.0 * g).collect();
        assert_close(
            &format!("conv2d {name}: grad_weight (accumulated twice)"),
            grad_weight.as_slice(),
            &twice,
        );
        assert_no_fault(&backend, name);
    }
}

// ---- batch normalisation ----------------------------------------------------------------------

#[derive(Deserialize)]
struct BatchNormCase {
    name: String,
    batch: usize,
    channels: usize,
    spatial: usize,
    eps: f64,
    momentum: f64,
    x: Vec<f64>,
    gamma: Vec<f64>,
    beta: Vec<f64>,
    running_mean_in: Vec<f64>,
    running_var_in: Vec<f64>,
    grad_y: Vec<f64>,
    y: Vec<f64>,
    save_mean: Vec<f64>,
    save_invstd: Vec<f64>,
    running_mean: Vec<f64>,
    running_var: Vec<f64>,
    grad_x: Vec<f64>,
    grad_gamma: Vec<f64>,
    grad_beta: Vec<f64>,
    y_inference: Vec<f64>,
}

#[test]
fn batch_norm_train_forward_backward_and_inference_match_torch() {
    let backend = Reference::new();
    for case in vectors().batch_norm {
        let shape = BatchNormShape {
            batch: case.batch,
            channels: case.channels,
            spatial: case.spatial,
            eps: case.eps,
            momentum: case.momentum,
            groups: 1,
            running_every: 1,
        };
        let name = &case.name;
        let (x, gamma, beta) = (buffer(&case.x), buffer(&case.gamma), buffer(&case.beta));
        let mut y = poisoned(shape.len());
        let mut save_mean = poisoned(case.channels);
        let mut save_invstd = poisoned(case.channels);
        let mut running_mean = buffer(&case.running_mean_in);
        let mut running_var = buffer(&case.running_var_in);
        backend
            .batch_norm_forward_train(
                &shape,
                BnTrain {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    y: &mut y,
                    save_mean: &mut save_mean,
                    save_invstd: &mut save_invstd,
                    running_mean: &mut running_mean,
                    running_var: &mut running_var,
                },
            )
            .unwrap();
        assert_close(&format!("batch_norm {name}: y"), y.as_slice(), &case.y);
        assert_close(
            &format!("batch_norm {name}: save_mean"),
            save_mean.as_slice(),
            &case.save_mean,
        );
        assert_close(
            &format!("batch_norm {name}: save_invstd"),
            save_invstd.as_slice(),
            &case.save_invstd,
        );
        assert_close(
            &format!("batch_norm {name}: running_mean"),
            running_mean.as_slice(),
            &case.running_mean,
        );
        assert_close(
            &format!("batch_norm {name}: running_var (unbiased)"),
            running_var.as_slice(),
            &case.running_var,
        );

        let mut grad_x = poisoned(shape.len());
        let mut grad_gamma = backend.alloc(case.channels).unwrap();
        let mut grad_beta = backend.alloc(case.channels).unwrap();
        backend
            .batch_norm_backward(
                &shape,
                BnBackward {
                    x: &x,
                    grad_y: &buffer(&case.grad_y),
                    gamma: &gamma,
                    save_mean: &save_mean,
                    save_invstd: &save_invstd,
                    grad_x: &mut grad_x,
                    grad_gamma: &mut grad_gamma,
                    grad_beta: &mut grad_beta,
                },
            )
            .unwrap();
        assert_close(
            &format!("batch_norm {name}: grad_x"),
            grad_x.as_slice(),
            &case.grad_x,
        );
        assert_close(
            &format!("batch_norm {name}: grad_gamma"),
            grad_gamma.as_slice(),
            &case.grad_gamma,
        );
        assert_close(
            &format!("batch_norm {name}: grad_beta"),
            grad_beta.as_slice(),
            &case.grad_beta,
        );

        let mut y_inference = poisoned(shape.len());
        backend
            .batch_norm_forward_inference(
                &shape,
                BnInference {
                    x: &x,
                    gamma: &gamma,
                    beta: &beta,
                    running_mean: &running_mean,
                    running_var: &running_var,
                    y: &mut y_inference,
                },
            )
            .unwrap();
        assert_close(
            &format!("batch_norm {name}: inference y"),
            y_inference.as_slice(),
            &case.y_inference,
        );
        assert_no_fault(&backend, name);
    }
}

// ---- pooling ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MaxPoolCase {
    name: String,
    batch: usize,
    channels: usize,
    in_height: usize,
    in_width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    x: Vec<f64>,
    grad_y: Vec<f64>,
    y: Vec<f64>,
    argmax: Vec<u32>,
    grad_x: Vec<f64>,
}

#[test]
fn max_pool2d_values_argmax_and_gradient_match_torch() {
    let backend = Reference::new();
    for case in vectors().max_pool2d {
        let shape = PoolShape {
            batch: case.batch,
            channels: case.channels,
            in_height: case.in_height,
            in_width: case.in_width,
            kernel: case.kernel,
            stride: case.stride,
            padding: case.padding,
        };
        let name = &case.name;
        let mut y = poisoned(shape.output_len());
        let mut argmax = backend.alloc_index(shape.output_len()).unwrap();
        backend
            .max_pool2d_forward(&shape, &buffer(&case.x), &mut y, &mut argmax)
            .unwrap();
        assert_close(&format!("max_pool2d {name}: y"), y.as_slice(), &case.y);
        assert_eq!(
            argmax.as_slice(),
            &case.argmax[..],
            "max_pool2d {name}: argmax"
        );
        let mut grad_x = poisoned(shape.input_len());
        backend
            .max_pool2d_backward(&shape, &buffer(&case.grad_y), &argmax, &mut grad_x)
            .unwrap();
        assert_close(
            &format!("max_pool2d {name}: grad_x"),
            grad_x.as_slice(),
            &case.grad_x,
        );
        assert_no_fault(&backend, name);
    }
}

#[derive(Deserialize)]
struct GlobalAvgPoolCase {
    name: String,
    batch: usize,
    channels: usize,
    spatial: usize,
    x: Vec<f64>,
    grad_y: Vec<f64>,
    y: Vec<f64>,
    grad_x: Vec<f64>,
}

#[test]
fn global_avg_pool_matches_adaptive_avg_pool() {
    let backend = Reference::new();
    for case in vectors().global_avg_pool {
        let (b, c, s) = (case.batch, case.channels, case.spatial);
        let name = &case.name;
        let mut y = poisoned(b * c);
        backend
            .global_avg_pool_forward(&buffer(&case.x), &mut y, b, c, s)
            .unwrap();
        assert_close(&format!("global_avg_pool {name}: y"), y.as_slice(), &case.y);
        let mut grad_x = poisoned(b * c * s);
        backend
            .global_avg_pool_backward(&buffer(&case.grad_y), &mut grad_x, b, c, s)
            .unwrap();
        assert_close(
            &format!("global_avg_pool {name}: grad_x"),
            grad_x.as_slice(),
            &case.grad_x,
        );
        assert_no_fault(&backend, name);
    }
}

// ---- roi align --------------------------------------------------------------------------------

#[derive(Deserialize)]
struct RoiAlignCase {
    name: String,
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    num_rois: usize,
    pooled: usize,
    spatial_scale: f64,
    sampling_ratio: usize,
    aligned: bool,
    features: Vec<f64>,
    boxes: Vec<f64>,
    grad_output: Vec<f64>,
    output: Vec<f64>,
    grad_features: Vec<f64>,
}

#[test]
fn roi_align_matches_torchvision() {
    let backend = Reference::new();
    for case in vectors().roi_align {
        let shape = RoiAlignShape {
            batch: case.batch,
            channels: case.channels,
            height: case.height,
            width: case.width,
            num_rois: case.num_rois,
            pooled_h: case.pooled,
            pooled_w: case.pooled,
            spatial_scale: case.spatial_scale,
            sampling_ratio: case.sampling_ratio,
            aligned: case.aligned,
        };
        let name = &case.name;
        let boxes = buffer(&case.boxes);
        let mut output = poisoned(shape.output_len());
        backend
            .roi_align_forward(&shape, &buffer(&case.features), &boxes, &mut output)
            .unwrap();
        assert_close(
            &format!("roi_align {name}: output"),
            output.as_slice(),
            &case.output,
        );
        let mut grad_features = backend.alloc(shape.features_len()).unwrap();
        backend
            .roi_align_backward(
                &shape,
                &buffer(&case.grad_output),
                &boxes,
                &mut grad_features,
            )
            .unwrap();
        assert_close(
            &format!("roi_align {name}: grad_features"),
            grad_features.as_slice(),
            &case.grad_features,
        );
        assert_no_fault(&backend, name);
    }
}

// ---- rows -------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct L2NormalizeCase {
    name: String,
    rows: usize,
    cols: usize,
    x: Vec<f64>,
    grad_y: Vec<f64>,
    y: Vec<f64>,
    norms: Vec<f64>,
    grad_x: Vec<f64>,
}

#[test]
fn l2_normalize_matches_f_normalize() {
    let backend = Reference::new();
    for case in vectors().l2_normalize {
        let (rows, cols) = (case.rows, case.cols);
        let name = &case.name;
        let mut y = poisoned(rows * cols);
        let mut norms = poisoned(rows);
        backend
            .l2_normalize_forward(&buffer(&case.x), &mut y, &mut norms, rows, cols)
            .unwrap();
        assert_close(&format!("l2_normalize {name}: y"), y.as_slice(), &case.y);
        assert_close(
            &format!("l2_normalize {name}: norms"),
            norms.as_slice(),
            &case.norms,
        );
        let mut grad_x = poisoned(rows * cols);
        backend
            .l2_normalize_backward(&y, &norms, &buffer(&case.grad_y), &mut grad_x, rows, cols)
            .unwrap();
        assert_close(
            &format!("l2_normalize {name}: grad_x"),
            grad_x.as_slice(),
            &case.grad_x,
        );
        assert_no_fault(&backend, name);
    }
}

#[derive(Deserialize)]
struct SoftmaxCase {
    name: String,
    rows: usize,
    cols: usize,
    valid_cols: usize,
    x: Vec<f64>,
    softmax: Vec<f64>,
    logsumexp: Vec<f64>,
}

#[test]
fn row_softmax_and_logsumexp_match_torch() {
    let backend = Reference::new();
    for case in vectors().softmax {
        let desc = RowsDesc {
            rows: case.rows,
            cols: case.cols,
            valid_cols: case.valid_cols,
        };
        let name = &case.name;
        let x = buffer(&case.x);
        let mut y = poisoned(desc.len());
        backend.row_softmax(&desc, &x, &mut y).unwrap();
        assert_close(&format!("row_softmax {name}"), y.as_slice(), &case.softmax);
        let mut lse = poisoned(desc.rows);
        backend.row_logsumexp(&desc, &x, &mut lse).unwrap();
        assert_close(
            &format!("row_logsumexp {name}"),
            lse.as_slice(),
            &case.logsumexp,
        );
        assert_no_fault(&backend, name);
    }
}

#[derive(Deserialize)]
struct HardCrossEntropyCase {
    name: String,
    rows: usize,
    cols: usize,
    valid_cols: usize,
    grad_scale: f64,
    logits: Vec<f64>,
    labels: Vec<u32>,
    loss: Vec<f64>,
    grad: Vec<f64>,
}

#[test]
fn softmax_cross_entropy_matches_f_cross_entropy() {
    let backend = Reference::new();
    for case in vectors().hard_cross_entropy {
        let desc = RowsDesc {
            rows: case.rows,
            cols: case.cols,
            valid_cols: case.valid_cols,
        };
        let name = &case.name;
        let mut logits = buffer(&case.logits);
        let mut loss = poisoned(desc.rows);
        backend
            .softmax_cross_entropy(
                &desc,
                case.grad_scale,
                &mut logits,
                &labels(&case.labels),
                &mut loss,
            )
            .unwrap();
        assert_close(
            &format!("softmax_cross_entropy {name}: loss"),
            loss.as_slice(),
            &case.loss,
        );
        assert_close(
            &format!("softmax_cross_entropy {name}: grad of the mean"),
            logits.as_slice(),
            &case.grad,
        );
        assert_no_fault(&backend, name);
    }
}

#[derive(Deserialize)]
struct SoftCrossEntropyCase {
    name: String,
    rows: usize,
    cols: usize,
    valid_cols: usize,
    grad_scale: f64,
    logits: Vec<f64>,
    targets: Vec<f64>,
    loss: Vec<f64>,
    grad: Vec<f64>,
}

#[test]
fn soft_cross_entropy_matches_f_cross_entropy_with_probabilities() {
    let backend = Reference::new();
    for case in vectors().soft_cross_entropy {
        let desc = RowsDesc {
            rows: case.rows,
            cols: case.cols,
            valid_cols: case.valid_cols,
        };
        let name = &case.name;
        let mut logits = buffer(&case.logits);
        let mut loss = poisoned(desc.rows);
        backend
            .soft_cross_entropy(
                &desc,
                case.grad_scale,
                &mut logits,
                &buffer(&case.targets),
                &mut loss,
            )
            .unwrap();
        assert_close(
            &format!("soft_cross_entropy {name}: loss"),
            loss.as_slice(),
            &case.loss,
        );
        assert_close(
            &format!("soft_cross_entropy {name}: grad of the mean"),
            logits.as_slice(),
            &case.grad,
        );
        assert_no_fault(&backend, name);
    }
}

#[derive(Deserialize)]
struct ContrastiveCase {
    name: String,
    rows: usize,
    row_offset: usize,
    batch: usize,
    cols: usize,
    valid_cols: usize,
    num_classes: u32,
    beta: Option<f64>,
    grad_scale: f64,
    logits: Vec<f64>,
    labels: Vec<u32>,
    loss: Vec<f64>,
    grad: Vec<f64>,
}

#[test]
fn contrastive_rows_match_autograd_of_the_written_out_loss() {
    let backend = Reference::new();
    for case in vectors().contrastive {
        let desc = ContrastiveRowsDesc {
            rows: case.rows,
            row_offset: case.row_offset,
            batch: case.batch,
            cols: case.cols,
            valid_cols: case.valid_cols,
            num_classes: case.num_classes,
            weighting: match case.beta {
                None => PositiveWeighting::SupCon,
                Some(beta) => PositiveWeighting::Decoupled { beta },
            },
            grad_scale: case.grad_scale,
        };
        let name = &case.name;
        let mut logits = buffer(&case.logits);
        let mut loss = poisoned(case.row_offset + case.rows);
        backend
            .contrastive_rows(&desc, &mut logits, &labels(&case.labels), &mut loss)
            .unwrap();
        assert_close(
            &format!("contrastive_rows {name}: loss"),
            &loss.as_slice()[case.row_offset..],
            &case.loss,
        );
        assert_close(
            &format!("contrastive_rows {name}: grad"),
            logits.as_slice(),
            &case.grad,
        );
        // Labels past `valid_cols` are out of range on purpose: masked columns are not checked.
        assert_no_fault(&backend, name);
    }
}

// ---- optimisation -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct SgdCase {
    name: String,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    dampening: f64,
    nesterov: bool,
    initial: Vec<f64>,
    grads: Vec<Vec<f64>>,
    weights: Vec<Vec<f64>>,
    velocities: Vec<Option<Vec<f64>>>,
}

#[test]
fn sgd_matches_torch_optim_sgd_over_three_steps() {
    let backend = Reference::new();
    for case in vectors().sgd {
        let name = &case.name;
        let len = case.initial.len();
        let mut weights = buffer(&case.initial);
        let mut velocity = backend.alloc(len).unwrap();
        for (step, grads) in case.grads.iter().enumerate() {
            let params = SgdParams {
                lr: case.lr,
                momentum: case.momentum,
                weight_decay: case.weight_decay,
                dampening: case.dampening,
                nesterov: case.nesterov,
                first_step: step == 0,
            };
            backend
                .sgd_momentum_update(&params, &mut weights, &buffer(grads), &mut velocity, len)
                .unwrap();
            assert_close(
                &format!("sgd {name}: weights after step {}", step + 1),
                weights.as_slice(),
                &case.weights[step],
            );
            if let Some(expected) = &case.velocities[step] {
                assert_close(
                    &format!("sgd {name}: velocity after step {}", step + 1),
                    velocity.as_slice(),
                    expected,
                );
            }
        }
        assert_no_fault(&backend, name);
    }
}

/// The check has teeth: one wrong element among PyTorch's values fails it.
#[test]
#[should_panic(expected = "scaled error")]
fn a_perturbed_value_fails_the_comparison() {
    let case = &vectors().conv2d[0];
    let mut wrong = case.output.clone();
    wrong[3] *= 1.0 + 1e-8;
    assert_close("perturbed conv2d output", &wrong, &case.output);
}
