//! The dense kernels: strided-batched GEMM and the linear layer's bias, forward and backward.

use super::bounds::product;
use super::ReferenceBackend;
use crate::desc::{GemmDesc, MatrixLayout};
use crate::element::Element;
use crate::error::{check_len, Result};

/// Position of `op(M)[row][col]` of matrix `t` of a batch, as [`GemmDesc`] defines it.
fn operand_index(
    layout: &MatrixLayout,
    transposed: bool,
    t: usize,
    row: usize,
    col: usize,
) -> usize {
    let (stored_row, stored_col) = if transposed { (col, row) } else { (row, col) };
    layout.offset + t * layout.batch_stride + stored_row * layout.ld + stored_col
}

/// `C_t = alpha * op(A_t) op(B_t) + beta * C_t` for every `t < batch`, each dot product summed
/// in f64; C is not read when `beta == 0`.
pub fn gemm<T: Element>(desc: &GemmDesc, a: &[T], b: &[T], c: &mut [T]) -> Result<()> {
    desc.check(a.len(), b.len(), c.len())?;
    for t in 0..desc.batch {
        for i in 0..desc.m {
            for j in 0..desc.n {
                let dot: f64 = (0..desc.k)
                    .map(|p| {
                        a[operand_index(&desc.a, desc.trans_a, t, i, p)].widen()
                            * b[operand_index(&desc.b, desc.trans_b, t, p, j)].widen()
                    })
                    .sum();
                let out = &mut c[operand_index(&desc.c, false, t, i, j)];
                let previous = if desc.beta == 0.0 {
                    0.0
                } else {
                    desc.beta * out.widen()
                };
                *out = T::from_f64(desc.alpha * dot + previous);
            }
        }
    }
    Ok(())
}

/// `x[r][c] += bias[c]`.
pub fn bias_add<T: Element>(x: &mut [T], bias: &[T], rows: usize, cols: usize) -> Result<()> {
    check_len("bias_add x", x.len(), product("bias_add", &[rows, cols])?)?;
    check_len("bias_add bias", bias.len(), cols)?;
    if cols == 0 {
        return Ok(());
    }
    for row in x[..rows * cols].chunks_exact_mut(cols) {
        for (v, &bv) in row.iter_mut().zip(bias) {
            *v = T::from_f64(v.widen() + bv.widen());
        }
    }
    Ok(())
}

/// `grad_bias[c] += sum_r grad_out[r][c]` (accumulates).
pub fn bias_backward<T: Element>(
    grad_out: &[T],
    grad_bias: &mut [T],
    rows: usize,
    cols: usize,
) -> Result<()> {
    check_len(
        "bias_backward grad_out",
        grad_out.len(),
        product("bias_backward", &[rows, cols])?,
    )?;
    check_len("bias_backward grad_bias", grad_bias.len(), cols)?;
    for (col, gb) in grad_bias[..cols].iter_mut().enumerate() {
        let column_sum: f64 = (0..rows).map(|r| grad_out[r * cols + col].widen()).sum();
        *gb = T::from_f64(gb.widen() + column_sum);
    }
    Ok(())
}

impl<T: Element> crate::backend::DenseOps for ReferenceBackend<T> {
    fn gemm(
        &self,
        desc: &GemmDesc,
        a: &Self::Buffer,
        b: &Self::Buffer,
        c: &mut Self::Buffer,
    ) -> Result<()> {
        gemm(desc, a, b, c)
    }

    fn bias_add(
        &self,
        x: &mut Self::Buffer,
        bias: &Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_add(x, bias, rows, cols)
    }

    fn bias_backward(
        &self,
        grad_out: &Self::Buffer,
        grad_bias: &mut Self::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        bias_backward(grad_out, grad_bias, rows, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::MatrixLayout;

    #[test]
    fn plain_and_transposed_products() {
        // A = [[1, 2, 3], [4, 5, 6]], B = [[1, 0], [0, 1], [1, 1]]: A B = [[4, 5], [10, 11]].
        let a = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0f64, 0.0, 0.0, 1.0, 1.0, 1.0];
        let mut c = [f64::NAN; 4];
        gemm(&GemmDesc::new(2, 2, 3, false, false), &a, &b, &mut c).unwrap();
        assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
        // A^T stored as [3, 2] and B^T stored as [2, 3] give the same product.
        let a_t = [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0];
        let b_t = [1.0f64, 0.0, 1.0, 0.0, 1.0, 1.0];
        let mut c2 = [1.0f64; 4];
        gemm(
            &GemmDesc::new(2, 2, 3, true, true).alpha(2.0).beta(0.5),
            &a_t,
            &b_t,
            &mut c2,
        )
        .unwrap();
        assert_eq!(c2, [8.5, 10.5, 20.5, 22.5]);
    }

    #[test]
    fn strided_batch_with_offsets() {
        // Two 1x1 products stored at offset 1 with batch stride 2.
        let mut desc = GemmDesc::new(1, 1, 1, false, false);
        desc.batch = 2;
        desc.a = MatrixLayout::strided(1, 1, 2);
        desc.b = MatrixLayout::strided(0, 1, 1);
        desc.c = MatrixLayout::strided(0, 1, 1);
        let a = [0.0f64, 3.0, 0.0, 5.0];
        let b = [2.0f64, 7.0];
        let mut c = [0.0f64; 2];
        gemm(&desc, &a, &b, &mut c).unwrap();
        assert_eq!(c, [6.0, 35.0]);
        assert!(gemm(&desc, &a[..3], &b, &mut c).is_err());
    }

    #[test]
    fn bias_forward_and_backward() {
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        bias_add(&mut x, &[10.0, 20.0], 2, 2).unwrap();
        assert_eq!(x, [11.0, 22.0, 13.0, 24.0]);
        let mut gb = [1.0f32, 1.0];
        bias_backward(&[1.0, 2.0, 3.0, 4.0], &mut gb, 2, 2).unwrap();
        assert_eq!(gb, [5.0, 7.0]);
        assert!(bias_add(&mut x, &[1.0], 2, 2).is_err());
        assert!(bias_backward(&[1.0; 3], &mut gb, 2, 2).is_err());
    }
}
