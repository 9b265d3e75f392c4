//! Cross-check against torchvision: `runtime/tests/pytorch/augment_reference.json` holds
//! torchvision's outputs (resize, resized crop, each colour adjustment, Gaussian blur) for a
//! fixed 11 x 9 input, written by `runtime/tests/pytorch/make_augment_reference.py`. The test
//! reads the file, so it needs no Python.

use super::blur::gaussian_blur;
use super::colour::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, grayscale};
use super::config::AugmentConfig;
use super::crop::CropBox;
use super::resize::{resize, resize_region};
use super::views::eval_view;
use crate::image::Image;
use serde_json::Value;

const REFERENCE: &str = include_str!("../../tests/pytorch/augment_reference.json");

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap()
}

fn check(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{name}: max |diff| {worst} > {tol}");
}

#[test]
fn matches_torchvision() {
    let r: Value = serde_json::from_str(REFERENCE).unwrap();
    let input = Image {
        width: num(&r, "width") as usize,
        height: num(&r, "height") as usize,
        pixels: floats(&r["input"]),
    };
    for case in r["resize"].as_array().unwrap() {
        let (w, h) = (num(case, "width") as usize, num(case, "height") as usize);
        let out = resize(&input, w, h);
        check(
            &format!("resize {w}x{h}"),
            &out.pixels,
            &floats(&case["output"]),
            2e-6,
        );
    }
    for case in r["resized_crop"].as_array().unwrap() {
        let region = CropBox {
            x: num(case, "x") as usize,
            y: num(case, "y") as usize,
            width: num(case, "crop_width") as usize,
            height: num(case, "crop_height") as usize,
        };
        let (w, h) = (num(case, "width") as usize, num(case, "height") as usize);
        let out = resize_region(&input, region, w, h);
        check(
            &format!("resized_crop {region:?}"),
            &out.pixels,
            &floats(&case["output"]),
            2e-6,
        );
    }
    for case in r["jitter"].as_array().unwrap() {
        let op = case["op"].as_str().unwrap();
        let f = num(case, "factor") as f32;
        let mut img = input.clone();
        // Luma weights differ from torchvision's tensor path by 1e-4 on red (0.299 vs 0.2989).
        let tol = match op {
            "brightness" => {
                adjust_brightness(&mut img, f);
                1e-6
            }
            "contrast" => {
                adjust_contrast(&mut img, f);
                1.5e-4
            }
            "saturation" => {
                adjust_saturation(&mut img, f);
                1.5e-4
            }
            "hue" => {
                adjust_hue(&mut img, f);
                2e-6
            }
            _ => {
                grayscale(&mut img);
                1.5e-4
            }
        };
        check(
            &format!("{op} {f}"),
            &img.pixels,
            &floats(&case["output"]),
            tol,
        );
    }
    for case in r["blur"].as_array().unwrap() {
        let k = num(case, "kernel") as usize;
        let sigma = num(case, "sigma") as f32;
        let mut img = input.clone();
        gaussian_blur(&mut img, k, sigma);
        check(
            &format!("blur {k} {sigma}"),
            &img.pixels,
            &floats(&case["output"]),
            2e-6,
        );
    }
    for case in r["eval"].as_array().unwrap() {
        let size = num(case, "size") as usize;
        let mut cfg = AugmentConfig::for_image_size(size);
        cfg.eval_center_crop_min_size = 0;
        cfg.mean = [0.0; 3];
        cfg.std = [1.0; 3];
        let out = eval_view(&input, &cfg);
        check(
            &format!("eval {size}"),
            &out,
            &floats(&case["output"]),
            2e-6,
        );
    }
}
