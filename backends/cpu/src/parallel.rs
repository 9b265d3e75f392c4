//! One way to run a kernel over independent pieces of work, written once for both builds: with
//! `std` the pieces run on a rayon pool (recursive halving with `rayon::join`), without it they
//! run in order on the calling thread.
//!
//! A kernel describes its outputs as [`Split`] values (usually [`Rows`]: a mutable slice cut
//! into items of `stride` elements); `run` hands each task a contiguous range of items and the
//! matching pieces of every output, so the tasks never share mutable memory and no `unsafe` is
//! needed. Each task returns a value (a fault, a partial sum) and `join` combines them left to
//! right, so "the first fault" is the one with the smallest index, whatever the thread count.

use core::ops::Range;

use dscl_core::Fault;

/// Elements below which an elementwise kernel is not worth splitting across threads.
pub(crate) const ELEMENT_GRAIN: usize = 1 << 15;

/// The threading context a kernel runs in.
#[derive(Clone, Copy)]
pub(crate) struct Par<'p> {
    /// Worker threads available (1 = run serially).
    pub threads: usize,
    /// The pool to run on; `None` with `threads > 1` means rayon's global pool.
    #[cfg(feature = "std")]
    pub pool: Option<&'p rayon::ThreadPool>,
    #[cfg(not(feature = "std"))]
    pub _pool: core::marker::PhantomData<&'p ()>,
}

impl Par<'_> {
    /// A context that runs everything on the calling thread.
    #[cfg(test)]
    pub fn serial() -> Par<'static> {
        Par {
            threads: 1,
            #[cfg(feature = "std")]
            pool: None,
            #[cfg(not(feature = "std"))]
            _pool: core::marker::PhantomData,
        }
    }

    /// Runs `f` inside this context's pool (so nested rayon work, such as gemm's, uses it).
    #[cfg(feature = "std")]
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool {
            Some(pool) if self.threads > 1 => pool.install(f),
            _ => f(),
        }
    }

    /// Runs `f` (no pool without `std`).
    #[cfg(not(feature = "std"))]
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }

    /// Calls `f(range, parts)` over `0..items`, split into tasks of at least `grain` items when
    /// threads are available, and combines the results with `join` (left operand = lower items).
    pub fn run<P, R, F, J>(&self, items: usize, grain: usize, parts: P, f: F, join: J) -> R
    where
        P: Split,
        R: Send,
        F: Fn(Range<usize>, P) -> R + Sync,
        J: Fn(R, R) -> R + Sync,
    {
        #[cfg(feature = "std")]
        {
            let grain = grain.max(1);
            if self.threads > 1 && items > grain {
                let chunk = grain.max(items.div_ceil(self.threads * 4));
                return self.install(|| split_run(0..items, chunk, parts, &f, &join));
            }
        }
        let _ = (&join, grain);
        f(0..items, parts)
    }
}

#[cfg(feature = "std")]
fn split_run<P, R, F, J>(range: Range<usize>, chunk: usize, parts: P, f: &F, join: &J) -> R
where
    P: Split,
    R: Send,
    F: Fn(Range<usize>, P) -> R + Sync,
    J: Fn(R, R) -> R + Sync,
{
    let len = range.end - range.start;
    if len <= chunk {
        return f(range, parts);
    }
    let half = (len / 2).div_ceil(chunk) * chunk;
    let half = half.min(len - 1).max(1);
    let mid = range.start + half;
    let (left, right) = parts.split(half);
    let (a, b) = rayon::join(
        || split_run(range.start..mid, chunk, left, f, join),
        || split_run(mid..range.end, chunk, right, f, join),
    );
    join(a, b)
}

/// Output memory that can be cut in two after `items` items (only threads cut it).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) trait Split: Send + Sized {
    fn split(self, items: usize) -> (Self, Self);
}

/// A mutable slice seen as consecutive items of `stride` elements (the last may be shorter).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) struct Rows<'s, T>(pub &'s mut [T], pub usize);

impl<T: Send> Split for Rows<'_, T> {
    fn split(self, items: usize) -> (Self, Self) {
        let at = items.saturating_mul(self.1).min(self.0.len());
        let (a, b) = self.0.split_at_mut(at);
        (Rows(a, self.1), Rows(b, self.1))
    }
}

impl Split for () {
    fn split(self, _items: usize) -> (Self, Self) {
        ((), ())
    }
}

impl<A: Split, B: Split> Split for (A, B) {
    fn split(self, items: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split(items);
        let (b0, b1) = self.1.split(items);
        ((a0, b0), (a1, b1))
    }
}

impl<A: Split, B: Split, C: Split> Split for (A, B, C) {
    fn split(self, items: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split(items);
        let (b0, b1) = self.1.split(items);
        let (c0, c1) = self.2.split(items);
        ((a0, b0, c0), (a1, b1, c1))
    }
}

impl<A: Split, B: Split, C: Split, D: Split> Split for (A, B, C, D) {
    fn split(self, items: usize) -> (Self, Self) {
        let (a0, a1) = self.0.split(items);
        let (b0, b1) = self.1.split(items);
        let (c0, c1) = self.2.split(items);
        let (d0, d1) = self.3.split(items);
        ((a0, b0, c0, d0), (a1, b1, c1, d1))
    }
}

/// `join` for faults: the one from the lower items wins.
pub(crate) fn first_fault(a: Option<Fault>, b: Option<Fault>) -> Option<Fault> {
    a.or(b)
}

/// `join` for tasks that return nothing.
pub(crate) fn unit(_: (), _: ()) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_visited_once_in_order() {
        let par = Par::serial();
        let mut v = [0u32; 1000];
        let n = par.run(
            1000,
            7,
            Rows(&mut v[..], 1),
            |r, Rows(out, _)| {
                for (o, i) in out.iter_mut().zip(r.clone()) {
                    *o += i as u32;
                }
                r.len()
            },
            |a, b| a + b,
        );
        assert_eq!(n, 1000);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }

    #[cfg(feature = "std")]
    #[test]
    fn threaded_split_matches_ranges() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let par = Par {
            threads: 3,
            pool: Some(&pool),
        };
        for items in [0usize, 1, 2, 5, 64, 1001] {
            let mut v = vec![0u32; items * 3];
            let count = par.run(
                items,
                2,
                Rows(&mut v[..], 3),
                |r, Rows(out, s)| {
                    assert_eq!(out.len(), r.len() * s);
                    for (k, i) in r.clone().enumerate() {
                        out[k * 3..k * 3 + 3].fill(i as u32 + 1);
                    }
                    r.len()
                },
                |a, b| a + b,
            );
            assert_eq!(count, items);
            assert!(v.iter().enumerate().all(|(e, &x)| x == (e / 3) as u32 + 1));
        }
    }
}
