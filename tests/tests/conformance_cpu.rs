//! The conformance suite on the CPU backend: every family on the heap (std) backend, one
//! `#[test]` each, and a smaller pass of the whole suite on the arena-mode backend.

use dscl_cpu::CpuBackend;
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::{Config, Factory};

fn heap() -> Conformance<fn() -> CpuBackend<'static>> {
    Conformance::new(CpuBackend::new as fn() -> CpuBackend<'static>)
}

dscl_tests::conformance_tests!(Some(heap()));

/// Arena mode: every case gets a fresh single-threaded backend over the same caller-owned
/// arenas (a backend's buffers are carved in order and never freed; the next case starts over).
struct Arena {
    elems: Vec<f32>,
    indices: Vec<u32>,
}

impl Factory for Arena {
    type Backend<'a> = CpuBackend<'a>;
    fn make(&mut self) -> CpuBackend<'_> {
        // Dirty the arena first: alloc must hand out zero-filled buffers regardless.
        self.elems.fill(f32::NAN);
        self.indices.fill(u32::MAX);
        let be = CpuBackend::from_arena_with_threads(&mut self.elems, &mut self.indices, 1)
            .expect("a single-threaded arena backend");
        assert!(!be.is_heap());
        be
    }
}

#[test]
fn arena_mode_all_families() {
    let arena = Arena {
        elems: vec![0.0; 1 << 20],
        indices: vec![0; 1 << 14],
    };
    let report = Conformance::with_config(arena, Config::small_from_env()).run_all();
    println!("{report}");
}
