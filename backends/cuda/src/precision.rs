//! The arithmetic of the CUDA backend's matrix products and convolutions (`--precision`).
//!
//! Buffers always hold f32 and every other kernel computes in f32; only GEMM and convolution
//! can trade precision for tensor-core speed, as PyTorch's `allow_tf32` flags and bf16
//! autocast do. fp32 is the default because it is the precision the conformance suite holds
//! every backend to.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE f32 products, no tensor-core rounding (PyTorch with both `allow_tf32` flags off).
    #[default]
    Fp32,
    /// Products on tensor cores with inputs rounded to TF32 (10-bit mantissa), f32 accumulation
    /// (PyTorch with `torch.backends.cuda.matmul.allow_tf32` and `cudnn.allow_tf32` on).
    Tf32,
    /// Inputs rounded to bf16 (8-bit mantissa) before each product, f32 accumulation and
    /// f32 results (the products of `torch.autocast(dtype=torch.bfloat16)`; activations and
    /// weights stay f32 between layers).
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// Refuses a reduced precision on a backend other than CUDA, which would otherwise be
    /// silently ignored (the others compute in fp32 only). `backend` is the backend's name.
    pub fn check_backend(self, backend: &str) -> Result<(), String> {
        if self != Precision::Fp32 && backend != "cuda" {
            return Err(format!(
                "--precision {self} needs --backend cuda; the {backend} backend computes in fp32"
            ));
        }
        Ok(())
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision `{s}`: expected fp32, tf32 or bf16"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        assert_eq!(Precision::default(), Precision::Fp32);
        assert_eq!(Precision::Fp32.check_backend("cpu"), Ok(()));
        assert_eq!(Precision::Bf16.check_backend("cuda"), Ok(()));
        let refused = Precision::Tf32.check_backend("wgpu").unwrap_err();
        assert!(refused.contains("needs --backend cuda"), "{refused}");
        let err = "fp16".parse::<Precision>().unwrap_err();
        assert!(err.contains("fp16") && err.contains("bf16"), "{err}");
    }
}
