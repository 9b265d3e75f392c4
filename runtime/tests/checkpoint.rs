//! Checkpoints: round trip of a model's tensors, torchvision names, checksum refusal of a
//! corrupt file, atomic replacement.

use dscl_core::nn::{ResNetClassifier, ResNetConfig, TensorSet};
use dscl_cpu::CpuBackend;
use dscl_runtime::io::checkpoint::{put_batch_counters, Checkpoint, CheckpointWriter};
use rand::rngs::Xoshiro256PlusPlus;
use rand::SeedableRng;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dscl-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn round_trips_a_model_and_names_it_like_torchvision() {
    let be = CpuBackend::new();
    let model = ResNetClassifier::new(ResNetConfig::resnet18(), 10).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let params = TensorSet::initialised(&be, &model.params, &mut rng).unwrap();
    let state = TensorSet::initialised(&be, &model.state, &mut rng).unwrap();
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let mut w = CheckpointWriter::new();
    w.put_set(&be, &model.params, &params, "").unwrap();
    w.put_set(&be, &model.state, &state, "").unwrap();
    put_batch_counters(&mut w, &model.state, "", 7).unwrap();
    w.put_meta("config", "{\"arch\":\"resnet18\"}");
    w.write_atomic(&path).unwrap();

    let ckpt = Checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.meta("config").unwrap(), "{\"arch\":\"resnet18\"}");
    assert!(ckpt.has("layer4.1.bn2.num_batches_tracked").unwrap());
    let (shape, w0) = ckpt.get_f32("layer2.0.downsample.0.weight").unwrap();
    assert_eq!(shape, vec![128, 64, 1, 1]);
    let mut loaded = TensorSet::zeros(&be, &model.params).unwrap();
    ckpt.get_set(&be, &model.params, &mut loaded, "").unwrap();
    for (a, b) in params.buffers().iter().zip(loaded.buffers()) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
    let id = model.params.find("layer2.0.downsample.0.weight").unwrap();
    assert_eq!(params.get(id).to_vec(), w0);
    // Nothing but the checkpoint is left in the directory.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn refuses_a_corrupt_or_foreign_file() {
    let dir = temp_dir("corrupt");
    let path = dir.join("c.safetensors");
    let mut w = CheckpointWriter::new();
    w.put_f32("a", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    w.put_u32("queue.labels", &[3], &[1, 2, 3]).unwrap();
    w.write_atomic(&path).unwrap();
    assert!(Checkpoint::read(&path).is_ok());

    // One flipped bit in the tensor data.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let err = Checkpoint::read(&path).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");

    // Truncated.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(Checkpoint::read(&path).is_err());
    // Not a checkpoint at all.
    std::fs::write(&path, b"hello").unwrap();
    let err = Checkpoint::read(&path).err().unwrap().to_string();
    assert!(err.contains("not a readable checkpoint"), "{err}");
    // Missing.
    let err = Checkpoint::read(&dir.join("none")).err().unwrap();
    assert!(format!("{err:#}").contains("none"), "{err:#}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let be = CpuBackend::new();
    let small = ResNetClassifier::new(ResNetConfig::tiny(), 3).unwrap();
    let other = ResNetClassifier::new(ResNetConfig::tiny(), 5).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let params = TensorSet::initialised(&be, &small.params, &mut rng).unwrap();
    let dir = temp_dir("shape");
    let path = dir.join("m.safetensors");
    let mut w = CheckpointWriter::new();
    w.put_set(&be, &small.params, &params, "").unwrap();
    w.write_atomic(&path).unwrap();
    let ckpt = Checkpoint::read(&path).unwrap();
    let mut target = TensorSet::zeros(&be, &other.params).unwrap();
    let err = ckpt
        .get_set(&be, &other.params, &mut target, "")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("fc.weight"), "{err}");
}

/// Any single-bit change anywhere in a checkpoint file is refused: every bit of a small
/// checkpoint flipped in turn, whether it lands in the safetensors header, the metadata (the
/// config, epoch and step counters) or the tensors.
#[test]
fn every_single_bit_flip_is_refused() {
    let dir = temp_dir("bitflip");
    let path = dir.join("c.safetensors");
    let mut w = CheckpointWriter::new();
    w.put_f32("a", &[2, 3], &[1.0, -2.0, 3.5, 4.0, 0.0, 7.25])
        .unwrap();
    w.put_u32("queue.labels", &[3], &[1, 2, 3]).unwrap();
    w.put_i64_scalar("layer1.0.bn1.num_batches_tracked", 7)
        .unwrap();
    w.put_meta("epoch", "3");
    w.put_meta("global_step", "120");
    w.put_meta("classes", "10");
    w.put_meta("config", r#"{"lr":0.1,"replicas":2,"seed":0}"#);
    w.write_atomic(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let read = Checkpoint::read(&path).unwrap();
    assert_eq!(read.meta("epoch").unwrap(), "3");

    let flipped = dir.join("flipped.safetensors");
    let mut accepted = Vec::new();
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut bytes = good.clone();
            bytes[byte] ^= 1 << bit;
            std::fs::write(&flipped, &bytes).unwrap();
            if Checkpoint::read(&flipped).is_ok() {
                accepted.push((byte, bit));
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "{} of {} single-bit changes were accepted; (byte, bit) first: {:?}",
        accepted.len(),
        good.len() * 8,
        &accepted[..accepted.len().min(10)]
    );
}
