//! The conformance suite on the CUDA backend, one `#[test]` per family, when this machine has
//! an NVIDIA GPU with its driver, cuBLAS and NVRTC; otherwise each test prints why it skipped
//! (CI has no GPU: `scripts/gpu-check.sh` runs this on a GPU machine, with `DSCL_REQUIRE_CUDA=1`,
//! under which a missing GPU fails every test instead).

use dscl_cuda::CudaBackend;
use dscl_tests::conformance::Conformance;
use dscl_tests::harness::{Config, Factory};

/// Where a case's backend convolves: through cuDNN when it is installed, or always with the
/// backend's own direct kernels (which run where cuDNN is missing or refuses a shape).
#[derive(Clone, Copy)]
enum Convolutions {
    CudnnIfPresent,
    Direct,
}

struct Fresh(CudaBackend, Convolutions);

impl Factory for Fresh {
    type Backend<'a> = CudaBackend;
    fn make(&mut self) -> CudaBackend {
        let made = match self.1 {
            Convolutions::CudnnIfPresent => self.0.fresh(),
            Convolutions::Direct => self.0.fresh_with_direct_convolutions(),
        };
        // A case that cannot get a stream on a working device is a failure of the device.
        match made {
            Ok(be) => be,
            Err(e) => panic!("could not make a CUDA backend: {e}"),
        }
    }
}

/// The suite on GPU 0 (kernels compiled once, a fresh stream and fault slot per case), or
/// `None` after saying why there is none.
fn suite(convolutions: Convolutions) -> Option<Conformance<Fresh>> {
    match CudaBackend::new(0) {
        Ok(be) => {
            // Parallel reductions sum in another order than the sequential reference.
            let cfg = Config::from_env().with_tol_scale(8.0);
            Some(Conformance::with_config(Fresh(be, convolutions), cfg))
        }
        Err(reason) => {
            // With DSCL_REQUIRE_CUDA set (a GPU machine's check) this fails instead of skipping.
            dscl_cuda::skip_without_gpu(&format!("no CUDA device ({reason})"));
            None
        }
    }
}

dscl_tests::conformance_tests!(suite(Convolutions::CudnnIfPresent));

/// The direct convolution kernels, checked even where cuDNN would take their place.
mod direct_convolutions {
    use super::*;

    dscl_tests::conformance_tests!(@each suite(Convolutions::Direct); conv2d, shape_errors);
}

/// The NCCL collective at world size one (one GPU cannot host two NCCL ranks): each
/// operation's contract on the device, and the time of a ResNet-50-sized gradient all-reduce
/// (25.6 M floats) through it, printed for BENCHMARKS.md.
#[test]
fn nccl_world_of_one() {
    use dscl_core::backend::MemoryOps;
    use dscl_core::collective::{Collective, Placement};
    use dscl_cuda::{NcclCollective, NcclId};

    let be = match CudaBackend::new(0) {
        Ok(be) => be,
        Err(reason) => return dscl_cuda::skip_without_gpu(&format!("no CUDA device ({reason})")),
    };
    if let Err(reason) = dscl_cuda::find_nccl() {
        return dscl_cuda::skip_without_gpu(&reason.to_string());
    }
    let nccl = NcclCollective::join(&be, NcclId::create().unwrap(), Placement::SOLO).unwrap();
    let upload = |values: &[f32]| {
        let mut buffer = be.alloc(values.len()).unwrap();
        be.upload(&mut buffer, 0, values).unwrap();
        buffer
    };
    let read = |buffer: &dscl_cuda::CudaBuffer<f32>, len: usize| {
        let mut host = vec![0.0f32; len];
        be.download(buffer, 0, &mut host).unwrap();
        host
    };

    // A sum over one rank leaves each buffer as it was.
    let (a, b) = ([1.5f32, -2.0, 3.25], [7.0f32; 1000]);
    let mut buffers = vec![upload(&a), upload(&b)];
    nccl.all_reduce_sum(&be, &mut buffers).unwrap();
    assert_eq!(read(&buffers[0], 3), a);
    assert_eq!(read(&buffers[1], 1000), b);
    let mut host = [0.5f64, -1.0];
    nccl.all_reduce_sum_host(&mut host).unwrap();
    assert_eq!(host, [0.5, -1.0]);

    // A gather of one rank's first 3 of 5 copies them; too short an output is refused.
    let local = upload(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    let mut gathered = upload(&[0.0; 4]);
    nccl.all_gather(&be, &local, 3, &mut gathered).unwrap();
    assert_eq!(read(&gathered, 4), [1.0, 2.0, 3.0, 0.0]);
    assert!(nccl.all_gather(&be, &local, 5, &mut gathered).is_err());
    let mut labels = be.alloc_index(2).unwrap();
    be.upload_index(&mut labels, 0, &[4, 9]).unwrap();
    let mut all_labels = be.alloc_index(2).unwrap();
    nccl.all_gather_index(&be, &labels, 2, &mut all_labels)
        .unwrap();
    let mut got = [0u32; 2];
    be.download_index(&all_labels, 0, &mut got).unwrap();
    assert_eq!(got, [4, 9]);

    // Broadcast from rank 0 keeps the values; a root outside the run is refused.
    nccl.broadcast(&be, &mut buffers, 0).unwrap();
    assert_eq!(read(&buffers[0], 3), a);
    assert!(nccl.broadcast(&be, &mut buffers, 1).is_err());
    nccl.barrier().unwrap();

    // ResNet-50's 25.6 M gradients as one buffer summed in place: the transport alone (a step
    // groups one all-reduce per tensor).
    let mut gradients = vec![be.alloc(25_557_032).unwrap()];
    nccl.all_reduce_sum(&be, &mut gradients).unwrap();
    be.synchronize().unwrap();
    let start = std::time::Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        nccl.all_reduce_sum(&be, &mut gradients).unwrap();
    }
    be.synchronize().unwrap();
    let ms = start.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    println!("NCCL all-reduce at world size 1, 25,557,032 f32 in place: {ms:.3} ms per step");
}
