//! alloc (zero-filled), upload/download with offsets, the index-buffer twins, copy_index.
//! Expectations are exact and computed on the host.

use super::shape_errors::{expect, shape_tools, ShapeCase, Want::Shape};
use crate::gen::Gen;
use crate::harness::{fail, Config, Ctx, Factory, FamilyReport, OrFail, Res};
use dscl_core::{Backend, BufferLen, Element};
use proptest::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Debug)]
struct Case {
    len: usize,
    offset: usize,
    seed: u64,
}

pub(crate) fn run<Fac: Factory>(cfg: &Config, make: &RefCell<Fac>) -> FamilyReport {
    let max = cfg.dim(400, 64);
    let strategy = (0..=max, 0usize..=24, any::<u64>()).prop_map(|(len, offset, seed)| Case {
        len,
        offset,
        seed,
    });
    case_fn!(Runner, Case, run_case);
    crate::harness::run_family("memory", cfg, make, 64, strategy, Runner)
}

fn widen_all<E: Element>(v: &[E]) -> Vec<f64> {
    v.iter().map(|x| Element::widen(*x)).collect()
}

fn run_case<B: Backend>(ctx: &Ctx<'_, B>, case: &Case) -> Res<()> {
    let be = &ctx.be;
    let mut g = Gen::new(case.seed);
    let n = case.len + case.offset + g.below(5);
    let zeros = vec![0.0f64; n];
    let exact = vec![0.0f64; n];

    if be.device_name().is_empty() {
        return fail("device_name() is empty");
    }

    // alloc: the requested length, zero-filled (also after other buffers were written and
    // dropped, which is when an arena or a pool would hand back dirty memory).
    {
        let mut dirty = be.alloc(n).or_fail("alloc")?;
        let junk = Ctx::<B>::elems(&g.normal_vec(n, 1.0));
        be.upload(&mut dirty, 0, &junk).or_fail("upload")?;
    }
    let mut buf = be.alloc(n).or_fail("alloc")?;
    if buf.len() != n {
        return fail(format!(
            "alloc({n}) returned a buffer of length {}",
            buf.len()
        ));
    }
    let got = ctx.read_be(&buf)?;
    ctx.check_values("alloc", "zero fill", case, &[n], &got, &zeros, &exact)?;

    // alloc(0) is a valid, empty buffer.
    let empty = be.alloc(0).or_fail("alloc(0)")?;
    if empty.len() != 0 {
        return fail(format!("alloc(0) returned length {}", empty.len()));
    }

    // upload at an offset: only that range changes.
    let m = n - case.offset;
    let m = if m == 0 { 0 } else { g.below(m + 1) };
    let data = g.normal_vec(m, 2.0);
    be.upload(&mut buf, case.offset, &Ctx::<B>::elems(&data))
        .or_fail("upload at offset")?;
    let mut expect = vec![0.0f64; n];
    for (e, &v) in data.iter().enumerate() {
        expect[case.offset + e] = B::Elem::from_f64(v as f64).widen();
    }
    let got = ctx.read_be(&buf)?;
    ctx.check_values("upload", "at offset", case, &[n], &got, &expect, &exact)?;

    // An empty upload at the very end is valid and changes nothing.
    be.upload(&mut buf, n, &[])
        .or_fail("empty upload at offset len")?;

    // download from an offset: a sub-range.
    let off2 = g.below(n + 1);
    let m2 = g.below(n - off2 + 1);
    let mut part = vec![B::Elem::from_f64(-7.0); m2];
    be.download(&buf, off2, &mut part)
        .or_fail("download at offset")?;
    ctx.check_values(
        "download",
        "at offset",
        case,
        &[m2],
        &widen_all(&part),
        &expect[off2..off2 + m2],
        &exact[..m2],
    )?;

    // Index buffers: the same, exactly.
    let mut ib = be.alloc_index(n).or_fail("alloc_index")?;
    if ib.len() != n {
        return fail(format!("alloc_index({n}) returned length {}", ib.len()));
    }
    let got = ctx.read_be_idx(&ib)?;
    if got.iter().any(|&v| v != 0) {
        return fail(format!("alloc_index({n}) is not zero-filled: {got:?}"));
    }
    let labels: Vec<u32> = (0..m)
        .map(|_| {
            if g.chance(0.1) {
                u32::MAX - g.below(3) as u32
            } else {
                g.next_u64() as u32 % 1000
            }
        })
        .collect();
    be.upload_index(&mut ib, case.offset, &labels)
        .or_fail("upload_index at offset")?;
    let mut iexp = vec![0u32; n];
    iexp[case.offset..case.offset + m].copy_from_slice(&labels);
    let got = ctx.read_be_idx(&ib)?;
    if got != iexp {
        return fail(format!(
            "upload_index at offset {}: expected {iexp:?}, got {got:?}",
            case.offset
        ));
    }
    let mut ipart = vec![12345u32; m2];
    be.download_index(&ib, off2, &mut ipart)
        .or_fail("download_index at offset")?;
    if ipart[..] != iexp[off2..off2 + m2] {
        return fail(format!(
            "download_index at offset {off2}, len {m2}: expected {:?}, got {ipart:?}",
            &iexp[off2..off2 + m2]
        ));
    }

    // copy_index between offsets: only the destination range changes.
    let dn = n + g.below(4);
    let dst_init: Vec<u32> = (0..dn).map(|_| g.next_u64() as u32).collect();
    let mut dst = be.alloc_index(dn).or_fail("alloc_index")?;
    be.upload_index(&mut dst, 0, &dst_init)
        .or_fail("upload_index")?;
    let so = g.below(n + 1);
    let len = g.below(n - so + 1);
    let dofs = g.below(dn - len + 1);
    be.copy_index(&ib, so, &mut dst, dofs, len)
        .or_fail("copy_index")?;
    let mut cexp = dst_init.clone();
    cexp[dofs..dofs + len].copy_from_slice(&iexp[so..so + len]);
    let got = ctx.read_be_idx(&dst)?;
    if got != cexp {
        return fail(format!(
            "copy_index(src_offset {so}, dst_offset {dofs}, len {len}): expected {cexp:?}, got {got:?}"
        ));
    }
    ctx.no_faults("memory", case)
}

/// This family's shape errors, one of [`super::shape_errors`]'s table: each buffer one element
/// short is `ShapeMismatch`, each listed bad argument `InvalidArgument`, none a panic.
pub(crate) fn shape_errors<B: Backend>(ctx: &Ctx<'_, B>, _case: &ShapeCase) -> Res<()> {
    let (be, z, zi, e) = shape_tools(ctx);
    // ---- memory ----
    let mut d4 = z(4)?;
    expect("upload past the end", Shape, || {
        be.upload(&mut d4, 2, &e(3))
    })?;
    expect("download past the end", Shape, || {
        be.download(&d4, 2, &mut e(3))
    })?;
    let mut i4 = zi(4)?;
    expect("upload_index past the end", Shape, || {
        be.upload_index(&mut i4, 2, &[1, 2, 3])
    })?;
    expect("download_index past the end", Shape, || {
        be.download_index(&i4, 2, &mut [0; 3])
    })?;
    Ok(())
}
