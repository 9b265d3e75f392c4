//! The ResNet layouts against torchvision's: every parameter and running statistic, in
//! order, with the same name and shape, and the published parameter counts.
//! (tests/data/torchvision_resnet_tensors.json is written by
//! tests/pytorch/make_torchvision_names.py.)

use dscl_core::nn::{ResNetClassifier, ResNetConfig, TensorLayout};
use serde_json::Value;

const TORCHVISION: &str = include_str!("../data/torchvision_resnet_tensors.json");

fn listed(layout: &TensorLayout) -> Vec<(String, Vec<usize>)> {
    layout
        .specs()
        .iter()
        .map(|s| (s.name.as_str().to_string(), s.dims().to_vec()))
        .collect()
}

fn expected(arch: &str, which: &str) -> Vec<(String, Vec<usize>)> {
    let all: Value = serde_json::from_str(TORCHVISION).unwrap();
    all[arch][which]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e[0].as_str().unwrap().to_string();
            let dims = e[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (name, dims)
        })
        .collect()
}

fn check(arch: &str, config: ResNetConfig, count: usize) {
    let model = ResNetClassifier::new(config, 1000).unwrap();
    assert_eq!(
        listed(&model.params),
        expected(arch, "params"),
        "{arch} params"
    );
    assert_eq!(
        listed(&model.state),
        expected(arch, "state"),
        "{arch} state"
    );
    assert_eq!(model.params.total_len(), count, "{arch} parameter count");
}

#[test]
fn resnet18_matches_torchvision() {
    check("resnet18", ResNetConfig::resnet18(), 11_689_512);
}

#[test]
fn resnet34_matches_torchvision() {
    check("resnet34", ResNetConfig::resnet34(), 21_797_672);
}

#[test]
fn resnet50_matches_torchvision() {
    check("resnet50", ResNetConfig::resnet50(), 25_557_032);
}

#[test]
fn resnet32_has_the_cifar_shape() {
    let model = ResNetClassifier::new(ResNetConfig::resnet32(), 10).unwrap();
    // 3x3 stem of 16, 15 basic blocks, two 1x1 projections (16->32, 32->64), fc 64->10.
    assert_eq!(model.backbone.blocks.len(), 15);
    assert_eq!(model.backbone.feature_channels(), 64);
    assert_eq!(model.backbone.config.stride(), 4);
    let projections = model
        .backbone
        .blocks
        .iter()
        .filter(|b| b.downsample.is_some())
        .count();
    assert_eq!(projections, 2);
    // 0.46 M parameters as in He et al. plus the two projections' weights and norms.
    let expected = 464_154 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64);
    assert_eq!(model.params.total_len(), expected);
}

#[test]
fn tiny_fits_a_microcontroller() {
    let model = ResNetClassifier::new(ResNetConfig::tiny(), 10).unwrap();
    assert!(
        model.params.total_len() < 30_000,
        "{}",
        model.params.total_len()
    );
    assert_eq!(model.backbone.config.stride(), 4);
}
