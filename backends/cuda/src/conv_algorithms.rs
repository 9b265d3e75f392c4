//! Which of cuDNN's convolution algorithms a plan may run, and in what order, and the launch
//! loop that falls back down that order. Kept apart from the cuDNN calls so that both can be
//! tested without a GPU: the plan feeds in what the heuristics returned and a closure that
//! launches one algorithm.

use std::cell::Cell;

/// Scratch (bytes) one algorithm of one shape may ask for. A network allocates one workspace,
/// sized by the largest need over its shapes, and keeps it for the whole run, so this bounds a
/// permanent allocation. 256 MiB is small beside a training batch's activations on any card
/// cuDNN supports, and what it excludes are the FFT and non-fused Winograd variants that ask
/// for far more; the implicit-GEMM algorithms, which the heuristics rank near the top for these
/// shapes, need little or none, so a shape is not left without a candidate by the cap.
pub(crate) const WORKSPACE_CAP_BYTES: usize = 256 << 20;

/// One algorithm as cuDNN's heuristics offered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate<A> {
    pub algo: A,
    /// The heuristics' status for it was SUCCESS (the others cannot run this shape).
    pub ok: bool,
    pub workspace_bytes: usize,
    pub deterministic: bool,
    /// It may use tensor cores: any math type but FMA, since cuDNN's default math also permits
    /// TF32 on Ampere and later.
    pub tensor_op_math: bool,
}

/// `candidates` (in cuDNN's order, fastest expected first) less those that cannot run, need
/// more scratch than `workspace_cap`, or, for an `fp32` plan, may round to TF32. An fp32 plan
/// is the reference the other precisions and backends are compared with, so there
/// deterministic algorithms come first (run-to-run identical results); the order is otherwise
/// cuDNN's.
pub(crate) fn rank<A>(
    candidates: impl IntoIterator<Item = Candidate<A>>,
    workspace_cap: usize,
    fp32: bool,
) -> Vec<Candidate<A>> {
    let mut kept: Vec<Candidate<A>> = candidates
        .into_iter()
        .filter(|c| c.ok && c.workspace_bytes <= workspace_cap && !(fp32 && c.tensor_op_math))
        .collect();
    if fp32 {
        // A stable sort: cuDNN's order survives within each group.
        kept.sort_by_key(|c| !c.deterministic);
    }
    kept
}

/// What trying a pass's ranked algorithms came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Launched<E> {
    /// The algorithm of this rank ran.
    Ran(usize),
    /// None ran, or there are none: the caller uses the direct kernels.
    NoneRan,
    /// One failed in a way after which no other may be tried (the output may hold part of a
    /// result that another launch would add to).
    Stopped(E),
}

/// Launches `ranked` algorithms until one succeeds, starting from the rank in `winner` (the
/// one that last ran, so a step does not repeat the failures of the steps before) and going
/// round to the ranks above it last. An error `may_try_next` refuses stops the search. When
/// every algorithm has failed, `winner` is set past the end, so later calls go straight to the
/// direct kernels instead of failing each algorithm again.
pub(crate) fn launch_ranked<A: Copy, E>(
    ranked: &[A],
    winner: &Cell<usize>,
    may_try_next: impl Fn(&E) -> bool,
    mut launch: impl FnMut(A) -> Result<(), E>,
) -> Launched<E> {
    let start = winner.get();
    if start >= ranked.len() {
        return Launched::NoneRan;
    }
    for rank in (start..ranked.len()).chain(0..start) {
        match launch(ranked[rank]) {
            Ok(()) => {
                winner.set(rank);
                return Launched::Ran(rank);
            }
            Err(e) if !may_try_next(&e) => return Launched::Stopped(e),
            Err(_) => {}
        }
    }
    winner.set(ranked.len());
    Launched::NoneRan
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A candidate that can run, needs no scratch, is deterministic and uses FMA math.
    fn plain(algo: u32) -> Candidate<u32> {
        Candidate {
            algo,
            ok: true,
            workspace_bytes: 0,
            deterministic: true,
            tensor_op_math: false,
        }
    }

    fn algos(ranked: &[Candidate<u32>]) -> Vec<u32> {
        ranked.iter().map(|c| c.algo).collect()
    }

    #[test]
    fn rank_drops_what_the_heuristics_marked_failed() {
        let list = [
            plain(1),
            Candidate {
                ok: false,
                ..plain(2)
            },
            plain(3),
            Candidate {
                ok: false,
                ..plain(4)
            },
        ];
        for fp32 in [true, false] {
            assert_eq!(algos(&rank(list, WORKSPACE_CAP_BYTES, fp32)), [1, 3]);
        }
    }

    #[test]
    fn rank_drops_what_needs_more_than_the_cap() {
        let list = [
            Candidate {
                workspace_bytes: 300 * MIB,
                ..plain(1)
            },
            Candidate {
                workspace_bytes: 256 * MIB,
                ..plain(2)
            },
            Candidate {
                workspace_bytes: 256 * MIB + 1,
                ..plain(3)
            },
            Candidate {
                workspace_bytes: 4 * MIB,
                ..plain(4)
            },
        ];
        for fp32 in [true, false] {
            assert_eq!(algos(&rank(list, WORKSPACE_CAP_BYTES, fp32)), [2, 4]);
        }
        assert_eq!(algos(&rank(list, 0, false)), Vec::<u32>::new());
    }

    #[test]
    fn rank_drops_tensor_op_math_for_fp32_only() {
        let list = [
            Candidate {
                tensor_op_math: true,
                ..plain(1)
            },
            plain(2),
            Candidate {
                tensor_op_math: true,
                ..plain(3)
            },
        ];
        assert_eq!(algos(&rank(list, WORKSPACE_CAP_BYTES, true)), [2]);
        // TF32 and bf16 plans: tensor cores are what they ask for.
        assert_eq!(algos(&rank(list, WORKSPACE_CAP_BYTES, false)), [1, 2, 3]);
    }

    #[test]
    fn rank_puts_deterministic_first_for_fp32_keeping_cudnn_order() {
        let nondet = |algo| Candidate {
            deterministic: false,
            ..plain(algo)
        };
        let list = [
            nondet(5),
            plain(0),
            nondet(2),
            plain(7),
            plain(1),
            nondet(3),
        ];
        assert_eq!(
            algos(&rank(list, WORKSPACE_CAP_BYTES, true)),
            [0, 7, 1, 5, 2, 3]
        );
        // Other precisions keep cuDNN's order as it is.
        assert_eq!(
            algos(&rank(list, WORKSPACE_CAP_BYTES, false)),
            [5, 0, 2, 7, 1, 3]
        );
    }

    #[test]
    fn rank_applies_every_rule_together() {
        let list = [
            Candidate {
                deterministic: false,
                ..plain(10)
            },
            Candidate {
                ok: false,
                ..plain(11)
            },
            Candidate {
                tensor_op_math: true,
                ..plain(12)
            },
            Candidate {
                workspace_bytes: 1 << 30,
                ..plain(13)
            },
            plain(14),
            Candidate {
                deterministic: false,
                tensor_op_math: true,
                ..plain(15)
            },
        ];
        assert_eq!(algos(&rank(list, WORKSPACE_CAP_BYTES, true)), [14, 10]);
        assert_eq!(
            algos(&rank(list, WORKSPACE_CAP_BYTES, false)),
            [10, 12, 14, 15]
        );
    }

    #[test]
    fn rank_of_nothing_is_nothing() {
        for fp32 in [true, false] {
            assert!(rank(Vec::<Candidate<u32>>::new(), WORKSPACE_CAP_BYTES, fp32).is_empty());
        }
        let all_failed = [Candidate {
            ok: false,
            ..plain(0)
        }];
        assert!(rank(all_failed, WORKSPACE_CAP_BYTES, true).is_empty());
    }

    /// Launches through `launch_ranked`, failing the algorithms in `failing`, and returns the
    /// outcome and the algorithms tried, in order.
    fn attempt(
        ranked: &[u32],
        winner: &Cell<usize>,
        failing: &[u32],
    ) -> (Launched<&'static str>, Vec<u32>) {
        let mut tried = Vec::new();
        let outcome = launch_ranked(
            ranked,
            winner,
            |_| true,
            |algo| {
                tried.push(algo);
                if failing.contains(&algo) {
                    Err("refused")
                } else {
                    Ok(())
                }
            },
        );
        (outcome, tried)
    }

    #[test]
    fn launch_tries_in_rank_order_and_reports_the_winner() {
        let ranked = [40, 10, 30, 20];
        let winner = Cell::new(0);
        let (outcome, tried) = attempt(&ranked, &winner, &[40, 10]);
        assert_eq!(outcome, Launched::Ran(2));
        assert_eq!(tried, [40, 10, 30]);
        assert_eq!(ranked[2], 30);
        assert_eq!(winner.get(), 2);
    }

    #[test]
    fn launch_starts_from_the_remembered_winner() {
        let ranked = [40, 10, 30, 20];
        let winner = Cell::new(0);
        attempt(&ranked, &winner, &[40, 10]);
        // The failures before the winner are not retried.
        let (outcome, tried) = attempt(&ranked, &winner, &[40, 10]);
        assert_eq!(outcome, Launched::Ran(2));
        assert_eq!(tried, [30]);
        // A winner that fails later gives way to the ranks after it, then those before.
        let (outcome, tried) = attempt(&ranked, &winner, &[30, 20]);
        assert_eq!(outcome, Launched::Ran(0));
        assert_eq!(tried, [30, 20, 40]);
        assert_eq!(winner.get(), 0);
    }

    #[test]
    fn launch_reports_none_when_all_fail_and_then_tries_nothing() {
        let ranked = [40, 10, 30];
        let winner = Cell::new(1);
        let (outcome, tried) = attempt(&ranked, &winner, &ranked);
        assert_eq!(outcome, Launched::NoneRan);
        assert_eq!(tried, [10, 30, 40]);
        // The direct kernels from now on: no algorithm is failed again.
        let (outcome, tried) = attempt(&ranked, &winner, &[]);
        assert_eq!(outcome, Launched::NoneRan);
        assert!(tried.is_empty());
    }

    #[test]
    fn launch_of_an_empty_list_is_none() {
        let winner = Cell::new(0);
        let (outcome, tried) = attempt(&[], &winner, &[]);
        assert_eq!(outcome, Launched::NoneRan);
        assert!(tried.is_empty());
    }

    #[test]
    fn launch_stops_at_an_error_that_forbids_another_try() {
        let ranked = [1, 2, 3];
        let winner = Cell::new(0);
        let mut tried = Vec::new();
        let outcome = launch_ranked(
            &ranked,
            &winner,
            |e: &&str| *e == "refused",
            |algo| {
                tried.push(algo);
                match algo {
                    1 => Err("refused"),
                    2 => Err("failed while running"),
                    _ => Ok(()),
                }
            },
        );
        assert_eq!(outcome, Launched::Stopped("failed while running"));
        assert_eq!(tried, [1, 2]);
        assert_eq!(winner.get(), 0);
    }
}
