//! Learning-rate schedules, evaluated at a fractional epoch so the rate can change every step.

use heapless::Vec;

use crate::error::{ensure, Error, Result};

/// Most milestones a step schedule may have.
pub const MAX_MILESTONES: usize = 8;

#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    Constant {
        lr: f64,
    },
    /// Linear warm-up from `lr / warmup_epochs` (at epoch 0) to `lr` over `warmup_epochs`, then
    /// half a cosine from `lr` to 0 at `epochs` (stage 1 of the published recipe: 10 warm-up
    /// epochs of 200).
    WarmupCosine {
        lr: f64,
        warmup_epochs: f64,
        epochs: f64,
    },
    /// `lr * gamma^(milestones passed)` (stage 2: x0.1 at epochs 20 and 30).
    Step {
        lr: f64,
        milestones: Vec<f64, MAX_MILESTONES>,
        gamma: f64,
    },
}

impl LrSchedule {
    /// `lr`, multiplied by `gamma` at each of `milestones` (epochs; at most
    /// [`MAX_MILESTONES`]).
    pub fn step(lr: f64, milestones: &[f64], gamma: f64) -> Result<Self> {
        let mut list = Vec::new();
        list.extend_from_slice(milestones)
            .map_err(|_| Error::InvalidArgument {
                what: "schedule milestones",
                reason: "more than MAX_MILESTONES",
            })?;
        Ok(LrSchedule::Step {
            lr,
            milestones: list,
            gamma,
        })
    }

    pub fn check(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match self {
            LrSchedule::Constant { lr } => ensure(ok(*lr), "learning rate", "must be finite"),
            LrSchedule::WarmupCosine {
                lr,
                warmup_epochs,
                epochs,
            } => {
                ensure(ok(*lr), "learning rate", "must be finite and non-negative")?;
                ensure(
                    ok(*warmup_epochs) && ok(*epochs) && *epochs > 0.0 && warmup_epochs <= epochs,
                    "schedule epochs",
                    "need 0 <= warm-up <= epochs and epochs > 0",
                )
            }
            LrSchedule::Step { lr, gamma, .. } => {
                ensure(ok(*lr), "learning rate", "must be finite and non-negative")?;
                ensure(
                    ok(*gamma),
                    "schedule gamma",
                    "must be finite and non-negative",
                )
            }
        }
    }

    /// The rate at fractional epoch `epoch` (0 = start of training).
    pub fn lr_at(&self, epoch: f64) -> f64 {
        match self {
            LrSchedule::Constant { lr } => *lr,
            LrSchedule::WarmupCosine {
                lr,
                warmup_epochs,
                epochs,
            } => {
                if epoch < *warmup_epochs {
                    // Reaches the full rate at the end of the warm-up; never 0 at the start.
                    lr * (epoch + 1.0).min(*warmup_epochs) / warmup_epochs
                } else {
                    let span = (epochs - warmup_epochs).max(f64::MIN_POSITIVE);
                    let t = ((epoch - warmup_epochs) / span).clamp(0.0, 1.0);
                    lr * 0.5 * (1.0 + libm::cos(core::f64::consts::PI * t))
                }
            }
            LrSchedule::Step {
                lr,
                milestones,
                gamma,
            } => {
                let passed = milestones.iter().filter(|&&m| epoch >= m).count();
                lr * libm::pow(*gamma, passed as f64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn warmup_then_half_cosine() {
        let s = LrSchedule::WarmupCosine {
            lr: 0.2,
            warmup_epochs: 10.0,
            epochs: 200.0,
        };
        assert!(s.check().is_ok());
        assert!(close(s.lr_at(0.0), 0.2 / 10.0));
        assert!(close(s.lr_at(4.0), 0.2 * 5.0 / 10.0));
        assert!(close(s.lr_at(10.0), 0.2));
        assert!(close(s.lr_at(105.0), 0.1));
        assert!(close(s.lr_at(200.0), 0.0));
    }

    #[test]
    fn steps_at_half_and_three_quarters() {
        let mut milestones = Vec::new();
        milestones.extend_from_slice(&[20.0, 30.0]).unwrap();
        let s = LrSchedule::Step {
            lr: 10.0,
            milestones,
            gamma: 0.1,
        };
        assert!(close(s.lr_at(0.0), 10.0));
        assert!(close(s.lr_at(19.9), 10.0));
        assert!(close(s.lr_at(20.0), 1.0));
        assert!(close(s.lr_at(30.0), 0.1));
    }

    #[test]
    fn refuses_bad_epochs() {
        let s = LrSchedule::WarmupCosine {
            lr: 0.1,
            warmup_epochs: 20.0,
            epochs: 10.0,
        };
        assert!(s.check().is_err());
    }
}
