//! Classifiers on a ResNet's pooled features: the torchvision model (backbone + `fc` in one
//! layout, trained end to end by the cross-entropy baseline) and the stand-alone linear
//! classifier of stage 2 (its own layout, on a frozen backbone).

use crate::error::Result;
use crate::nn::linear::Linear;
use crate::nn::resnet::{ResNet, ResNetConfig};
use crate::nn::tensors::{Init, TensorLayout};

/// torchvision's `resnetXX(num_classes)`: the backbone and its `fc` layer, so the parameter
/// count and names match torchvision's.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetClassifier {
    pub backbone: ResNet,
    pub fc: Linear,
    pub params: TensorLayout,
    pub state: TensorLayout,
}

impl ResNetClassifier {
    pub fn new(config: ResNetConfig, num_classes: usize) -> Result<Self> {
        let mut params = TensorLayout::new();
        let mut state = TensorLayout::new();
        let backbone = ResNet::new(config, &mut params, &mut state)?;
        let fc = Linear::new(&mut params, "fc", backbone.feature_channels(), num_classes)?;
        Ok(ResNetClassifier {
            backbone,
            fc,
            params,
            state,
        })
    }
}

/// Stage 2's classifier: `fc` over `features` pooled backbone features, in its own layout,
/// initialised as the official stage 2 (`equal_lincls.py`, `main_worker`: `fc.weight` drawn
/// from N(0, 0.01), `fc.bias` zeroed) rather than with PyTorch's default uniform.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearClassifier {
    pub fc: Linear,
    pub params: TensorLayout,
}

impl LinearClassifier {
    /// The standard deviation of the official stage-2 classifier's initial weights.
    pub const WEIGHT_STD: f64 = 0.01;

    pub fn new(features: usize, num_classes: usize) -> Result<Self> {
        let mut params = TensorLayout::new();
        let fc = Linear::with_init(
            &mut params,
            "fc",
            features,
            num_classes,
            Init::Normal {
                std: Self::WEIGHT_STD,
            },
            Init::Constant(0.0),
        )?;
        Ok(LinearClassifier { fc, params })
    }
}
