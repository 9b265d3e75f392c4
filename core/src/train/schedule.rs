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
    /// The official stage-1 schedule (`adjust_learning_rate` in the authors' `main.py`), at
    /// fractional epoch `e`:
    ///
    /// - warm-up, `e < warmup_epochs`: `lr * e / warmup_epochs`, a straight line from 0 at the
    ///   very first step to `lr` at the end of the warm-up;
    /// - then half a cosine, `lr * (1 + cos(pi * (e - warmup_epochs) / (epochs -
    ///   warmup_epochs))) / 2`, from `lr` at `warmup_epochs` to 0 at `epochs`.
    ///
    /// The official loop evaluates it every step at `e = epoch + i / iters_per_epoch` (step `i`
    /// of the epoch), so the rate changes every step, not every epoch; the runtime does the same.
    /// Stage 1 of the published recipe: 10 warm-up epochs of 200.
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
                    // 0 at the first step, as the official code has it.
                    lr * epoch.max(0.0) / warmup_epochs
                } else {
                    // (epochs == warmup_epochs: the official code divides by 0 here, but is
                    // never asked, since training ends at `epochs`; 0 is returned.)
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

    /// The official `adjust_learning_rate` at base 0.2, 10 warm-up epochs of 200, each value
    /// worked out by hand from its formula (warm-up `0.2 * e / 10`, then
    /// `0.2 * 0.5 * (1 + cos(pi * (e - 10) / 190))`). The old schedule (`lr * (e + 1) / 10`)
    /// gives 0.02 at the first step and 0.12 at epoch 5.
    #[test]
    fn warmup_then_half_cosine_as_the_official_code() {
        let s = LrSchedule::WarmupCosine {
            lr: 0.2,
            warmup_epochs: 10.0,
            epochs: 200.0,
        };
        assert!(s.check().is_ok());
        let table: [(f64, f64); 12] = [
            // The very first step: 0.2 * 0 / 10.
            (0.0, 0.0),
            // Step 1 of 100 in epoch 0: 0.2 * 0.01 / 10.
            (0.01, 0.0002),
            // Half-way through epoch 0: 0.2 * 0.5 / 10.
            (0.5, 0.01),
            // Mid warm-up: 0.2 * 5 / 10.
            (5.0, 0.1),
            // Last warm-up step at 100 steps per epoch: 0.2 * 9.99 / 10.
            (9.99, 0.1998),
            // Warm-up end: cos(0) = 1, 0.2 * 0.5 * 2.
            (10.0, 0.2),
            // A quarter into the cosine, (57.5 - 10) / 190 = 1/4: 0.1 * (1 + cos(pi/4))
            // = 0.1 * 1.7071067811865476.
            (57.5, 0.17071067811865476),
            // Mid cosine, (105 - 10) / 190 = 1/2: 0.1 * (1 + cos(pi/2)) = 0.1 * 1.
            (105.0, 0.1),
            // Three quarters, 3/4: 0.1 * (1 + cos(3pi/4)) = 0.1 * 0.2928932188134524.
            (152.5, 0.029289321881345254),
            // First step of the last epoch, 189/190: 0.1 * (1 - cos(pi/190))
            // = 0.1 * 1.3669500753099584e-4.
            (199.0, 1.3669500753099584e-5),
            // Last step of the last epoch at 100 steps per epoch, 189.99/190:
            // 0.1 * (1 - cos(pi * 0.01/190)) = 0.1 * 1.3669812171102082e-8.
            (199.99, 1.3669812171102082e-9),
            // The end of training: 0.1 * (1 + cos(pi)) = 0.
            (200.0, 0.0),
        ];
        for (epoch, want) in table {
            let got = s.lr_at(epoch);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1e-3),
                "epoch {epoch}: {got} != {want}"
            );
        }
        // No warm-up: the cosine from the first step.
        let cold = LrSchedule::WarmupCosine {
            lr: 0.2,
            warmup_epochs: 0.0,
            epochs: 200.0,
        };
        assert_eq!(cold.lr_at(0.0), 0.2);
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
