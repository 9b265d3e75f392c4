//! The conformance suite on the wgpu backend, one `#[test]` per family. In CI this runs on
//! Mesa's lavapipe (software Vulkan). Without an adapter each test prints why and passes,
//! except under `CI=true`, where a missing adapter is a failure (CI must really run these).

use std::rc::Rc;

use dscl_tests::conformance::Conformance;
use dscl_tests::harness::{Config, Factory, Size};
use dscl_wgpu::{GpuContext, WgpuBackend};

struct Fresh(Rc<GpuContext>);

impl Factory for Fresh {
    type Backend<'a> = WgpuBackend;
    fn make(&mut self) -> WgpuBackend {
        WgpuBackend::with_context(self.0.clone())
    }
}

/// The suite on a newly opened device, or `None` (after saying why) when there is none. Every
/// case gets a fresh backend (own fault slot and command stream) over the one device, sharing
/// its compiled pipelines.
fn suite() -> Option<Conformance<Fresh>> {
    match GpuContext::new() {
        Ok(ctx) => {
            // A software driver runs the reduced shapes; summation order differs from the
            // sequential reference, so tolerances are scaled.
            let cfg = Config::from_env()
                .with_size(Size::Small)
                .with_tol_scale(8.0);
            Some(Conformance::with_config(Fresh(ctx), cfg))
        }
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but no wgpu adapter: {reason}");
            }
            println!("skipped: no wgpu adapter ({reason})");
            None
        }
    }
}

dscl_tests::conformance_tests!(suite());
