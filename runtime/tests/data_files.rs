//! The file-backed data sets against files the tests write: list files, ImageNet-LT JSON,
//! image folders (PNG and JPEG, gray and RGB), corrupt images, CIFAR-10/100 binaries, and the
//! checks made when they are opened, before any work: labels bounded, listed files present,
//! at least two training classes, test classes matched to training ones by name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dscl_runtime::config::{DataArgs, LinearArgs, RunConfig, TrainArgs};
use dscl_runtime::data::{
    check_train_classes, open_test, open_train, CifarBinary, CifarKind, Dataset, ImageFolder,
    ImageNetLtJson, ListFile, Split, MAX_CLASSES,
};
use image::{GrayImage, Luma, Rgb, RgbImage};

mod common;
use common::{assert_refused, runtime, text};

fn write_png_rgb(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    RgbImage::from_fn(w, h, |_, _| Rgb(rgb)).save(path).unwrap();
}

fn write_png_gray(path: &Path, w: u32, h: u32, v: u8) {
    GrayImage::from_fn(w, h, |_, _| Luma([v]))
        .save(path)
        .unwrap();
}

fn write_jpeg_rgb(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let img = RgbImage::from_fn(w, h, |_, _| Rgb(rgb));
    image::DynamicImage::from(img)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

fn write_jpeg_gray(path: &Path, w: u32, h: u32, v: u8) {
    let img = GrayImage::from_fn(w, h, |_, _| Luma([v]));
    image::DynamicImage::from(img)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

fn error_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// A million-entry list in the ImageNet-LT layout, one entry per `step` of which exists (an
/// empty file under `root`); the rest name files that do not.
fn million_line_list(dir: &Path, step: u32) -> (PathBuf, PathBuf) {
    let root = dir.join("root");
    let list = dir.join("train.txt");
    let mut text = String::with_capacity(40_000_000);
    text.push_str("# ImageNet-LT style list\n");
    for i in 0..1_000_000u32 {
        let class = i % 1000;
        let path = format!("train/n{class:08}/n{class:08}_{i}.JPEG");
        if i % step == 0 {
            let file = root.join(&path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"").unwrap();
        }
        text.push_str(&format!("{path} {class}\n"));
    }
    std::fs::write(&list, text).unwrap();
    (list, root)
}

#[test]
fn million_line_list_indexes_without_opening_images() {
    let dir = tempfile::tempdir().unwrap();
    let (list, _) = million_line_list(dir.path(), u32::MAX);

    let start = Instant::now();
    let data = ListFile::open(&list, &dir.path().join("missing-root"), None).unwrap();
    let took = start.elapsed();
    assert_eq!(data.len(), 1_000_000);
    assert_eq!(data.num_classes(), 1000);
    assert_eq!(data.label(999_999), 999);
    assert_eq!(data.line(0), 2);
    eprintln!("indexed 1,000,000 lines in {took:?}");
    // The paths do not exist: indexing must not have touched them.
    assert!(!data.path(0).exists());
    // Generous for a debug build on a loaded machine; in release it is well under a second.
    assert!(took < Duration::from_secs(10), "indexing took {took:?}");
    let e = error_text(data.load(5));
    assert!(e.contains("n00000005_5.JPEG"), "{e}");
    assert!(
        data.describe(5).contains("train.txt:7"),
        "{}",
        data.describe(5)
    );
}

/// Checking that a million listed files exist is a small part of indexing: one `metadata`
/// per entry on rayon's threads. The root and the class directories exist and one file in a
/// thousand does, so every lookup walks the whole path as it would on real data.
#[test]
fn million_line_list_checks_its_files_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (list, root) = million_line_list(dir.path(), 1000);

    let start = Instant::now();
    let data = ListFile::open(&list, &root, None).unwrap();
    let indexed = start.elapsed();
    let missing = data.missing_files();
    let took = start.elapsed();
    eprintln!(
        "indexed 1,000,000 lines in {indexed:?}; with the existence check {took:?} \
         (check alone {:?})",
        took - indexed
    );
    assert_eq!(missing.len(), 999_000);
    assert_eq!(&missing[..3], [1, 2, 3]);
    assert_eq!(missing.last(), Some(&999_999));
    assert!(
        took < Duration::from_secs(30),
        "indexing and checking took {took:?}"
    );

    let e = error_text(data.clone().check_files(false));
    assert!(
        e.starts_with("999000 of 1000000 listed images do not exist or are not regular files: "),
        "{e}"
    );
    assert!(e.contains("n00000001_1.JPEG (listed at "), "{e}");
    assert!(e.contains("train.txt:3): no such file"), "{e}");
    assert!(e.contains("and 998997 more"), "{e}");
    let kept = data.check_files(true).unwrap();
    assert_eq!(kept.len(), 1000);
    assert_eq!((kept.line(1), kept.label(1)), (1002, 0));
}

#[test]
fn list_file_loads_images_and_reports_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("imgs")).unwrap();
    write_png_rgb(&dir.path().join("imgs/a.png"), 4, 3, [255, 0, 0]);
    write_jpeg_gray(&dir.path().join("imgs/b.jpg"), 8, 8, 128);
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "imgs/a.png 1\nimgs/b.jpg 0\n").unwrap();
    let data = ListFile::open(&list, dir.path(), Some(5)).unwrap();
    assert_eq!(data.num_classes(), 5);
    let a = data.load(0).unwrap();
    assert_eq!((a.width, a.height), (4, 3));
    assert!(a.channel(0).iter().all(|&v| v == 1.0));
    assert!(a.channel(1).iter().all(|&v| v == 0.0));
    let b = data.load(1).unwrap();
    assert_eq!(b.channel(0), b.channel(2));
    assert!(b.pixels.iter().all(|&v| (v - 128.0 / 255.0).abs() < 0.02));

    std::fs::write(&list, "imgs/a.png 1\n\n# x\nimgs/b.jpg\n").unwrap();
    let e = error_text(ListFile::open(&list, dir.path(), None));
    assert!(
        e.contains("list.txt:4") && e.contains("missing label"),
        "{e}"
    );
    std::fs::write(&list, "imgs/a.png one\n").unwrap();
    let e = error_text(ListFile::open(&list, dir.path(), None));
    assert!(e.contains("list.txt:1") && e.contains("`one`"), "{e}");
    std::fs::write(&list, "imgs/a.png 0\nimgs/b.jpg 5\n").unwrap();
    let e = error_text(ListFile::open(&list, dir.path(), Some(5)));
    assert!(
        e.contains("list.txt:2") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn imagenet_lt_json_resolves_against_root() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("train/n01")).unwrap();
    write_jpeg_rgb(&dir.path().join("train/n01/x.JPEG"), 16, 8, [10, 200, 30]);
    let json = dir.path().join("ImageNet_LT_train.json");
    std::fs::write(
        &json,
        r#"{"num_classes": 1000, "annotations": [{"fpath": "train/n01/x.JPEG", "category_id": 7}, {"fpath": "train/n01/gone.JPEG", "category_id": 8}]}"#,
    )
    .unwrap();
    let data = ImageNetLtJson::open(&json, dir.path()).unwrap();
    assert_eq!((data.len(), data.num_classes()), (2, 1000));
    assert_eq!(data.labels(), &[7, 8]);
    let img = data.load(0).unwrap();
    assert_eq!((img.width, img.height), (16, 8));
    assert!((img.channel(1)[0] - 200.0 / 255.0).abs() < 0.03);
    let e = error_text(data.load(1));
    assert!(e.contains("gone.JPEG"), "{e}");
}

#[test]
fn image_folder_reads_sorted_classes_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for class in ["cat", "ant", "bee", ".hidden"] {
        std::fs::create_dir(root.join(class)).unwrap();
    }
    write_png_rgb(&root.join("ant/2.png"), 5, 5, [1, 2, 3]);
    write_jpeg_rgb(&root.join("ant/1.JPG"), 8, 8, [200, 10, 10]);
    std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();
    write_png_gray(&root.join("bee/a.PNG"), 3, 2, 255);
    std::fs::create_dir(root.join("bee/sub")).unwrap();
    write_jpeg_gray(&root.join("bee/sub/b.jpeg"), 8, 8, 0);
    write_png_rgb(&root.join("cat/z.png"), 2, 2, [0, 0, 0]);
    write_png_rgb(&root.join(".hidden/z.png"), 2, 2, [0, 0, 0]);
    std::fs::write(root.join("README"), "a file at the top is not a class").unwrap();

    let data = ImageFolder::open(root).unwrap();
    assert_eq!(data.class_names(), ["ant", "bee", "cat"]);
    assert_eq!(data.num_classes(), 3);
    assert_eq!(data.labels(), &[0, 0, 1, 1, 2]);
    let names: Vec<String> = (0..data.len()).map(|i| data.describe(i)).collect();
    assert!(names[0].ends_with("ant/1.JPG"), "{names:?}");
    assert!(names[1].ends_with("ant/2.png"));
    assert!(names[2].ends_with("bee/a.PNG"));
    assert!(names[3].ends_with("bee/sub/b.jpeg"));
    let jpeg = data.load(0).unwrap();
    assert!((jpeg.channel(0)[0] - 200.0 / 255.0).abs() < 0.05);
    let gray = data.load(2).unwrap();
    assert_eq!((gray.width, gray.height), (3, 2));
    assert!(gray.pixels.iter().all(|&v| v == 1.0));

    // A class directory with no image is a class with no sample, reported by the training set.
    std::fs::create_dir(root.join("dog")).unwrap();
    let data = ImageFolder::open(root).unwrap();
    assert_eq!(data.class_names(), ["ant", "bee", "cat", "dog"]);
    assert_eq!(data.labels(), &[0, 0, 1, 1, 2]);
    let empty = tempfile::tempdir().unwrap();
    assert!(error_text(ImageFolder::open(empty.path())).contains("no class subdirectory"));
    std::fs::create_dir(empty.path().join("a")).unwrap();
    std::fs::create_dir(empty.path().join("b")).unwrap();
    let e = error_text(ImageFolder::open(empty.path()));
    assert!(
        e.ends_with("has no png/jpg/jpeg image in its 2 class directories"),
        "{e}"
    );
}

#[test]
fn corrupt_and_truncated_images_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("c")).unwrap();
    let good = dir.path().join("c/good.png");
    RgbImage::from_fn(64, 64, |x, y| {
        Rgb([x as u8 * 3, y as u8 * 2, (x ^ y) as u8])
    })
    .save(&good)
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(
        dir.path().join("c/truncated.png"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let mut corrupt = bytes.clone();
    for b in &mut corrupt[40..80] {
        *b ^= 0x5a;
    }
    std::fs::write(dir.path().join("c/corrupt.png"), &corrupt).unwrap();
    std::fs::File::create(dir.path().join("c/empty.png"))
        .unwrap()
        .write_all(b"")
        .unwrap();
    let data = ImageFolder::open(dir.path()).unwrap();
    for i in 0..data.len() {
        let name = data.describe(i);
        if name.ends_with("good.png") {
            assert!(data.load(i).is_ok());
        } else {
            let e = error_text(data.load(i));
            let file = Path::new(&name).file_name().unwrap().to_str().unwrap();
            assert!(e.contains(file), "{e}");
        }
    }
}

/// Writes CIFAR records: `labels` are the label bytes of each record, pixels are
/// `record index + plane` so planes can be told apart.
fn write_cifar(path: &Path, labels: &[&[u8]]) {
    let mut bytes = Vec::new();
    for (r, l) in labels.iter().enumerate() {
        bytes.extend_from_slice(l);
        for plane in 0..3u8 {
            bytes.extend(std::iter::repeat_n(r as u8 * 10 + plane, 1024));
        }
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cifar10_binary_train_and_test() {
    let dir = tempfile::tempdir().unwrap();
    for b in 1..=5u8 {
        write_cifar(
            &dir.path().join(format!("data_batch_{b}.bin")),
            &[&[b], &[9]],
        );
    }
    write_cifar(&dir.path().join("test_batch.bin"), &[&[3], &[4], &[5]]);
    let train = CifarBinary::open(dir.path(), Split::Train).unwrap();
    assert_eq!(train.kind(), CifarKind::Cifar10);
    assert_eq!((train.len(), train.num_classes()), (10, 10));
    assert_eq!(train.labels(), &[1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    let img = train.load(3).unwrap();
    assert_eq!((img.width, img.height), (32, 32));
    assert!(img.channel(0).iter().all(|&v| v == 10.0 / 255.0));
    assert!(img.channel(2).iter().all(|&v| v == 12.0 / 255.0));
    assert!(train.describe(3).ends_with("data_batch_2.bin record 1"));
    let test = CifarBinary::open(dir.path(), Split::Test).unwrap();
    assert_eq!(test.labels(), &[3, 4, 5]);

    // Truncated: the last record of test_batch.bin is cut short.
    let path = dir.path().join("test_batch.bin");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = error_text(CifarBinary::open(dir.path(), Split::Test));
    assert!(
        e.contains("test_batch.bin") && e.contains("record 2"),
        "{e}"
    );
    // A missing training batch is named.
    std::fs::remove_file(dir.path().join("data_batch_4.bin")).unwrap();
    let e = error_text(CifarBinary::open(dir.path(), Split::Train));
    assert!(e.contains("data_batch_4.bin"), "{e}");
    // A label byte out of range.
    write_cifar(&dir.path().join("test_batch.bin"), &[&[3], &[10]]);
    let e = error_text(CifarBinary::open(dir.path(), Split::Test));
    assert!(e.contains("record 1") && e.contains("label 10"), "{e}");
}

#[test]
fn cifar100_binary_uses_fine_labels() {
    let top = tempfile::tempdir().unwrap();
    // As extracted from the archive: a cifar-100-binary folder.
    let dir = top.path().join("cifar-100-binary");
    std::fs::create_dir(&dir).unwrap();
    write_cifar(&dir.join("train.bin"), &[&[19, 99], &[0, 42], &[3, 7]]);
    write_cifar(&dir.join("test.bin"), &[&[1, 50]]);
    let train = CifarBinary::open(top.path(), Split::Train).unwrap();
    assert_eq!(train.kind(), CifarKind::Cifar100);
    assert_eq!(train.num_classes(), 100);
    assert_eq!(train.labels(), &[99, 42, 7]);
    assert!(train
        .load(2)
        .unwrap()
        .channel(1)
        .iter()
        .all(|&v| v == 21.0 / 255.0));
    let test = CifarBinary::open(&dir, Split::Test).unwrap();
    assert_eq!(test.labels(), &[50]);

    let bytes = std::fs::read(dir.join("train.bin")).unwrap();
    std::fs::write(dir.join("train.bin"), &bytes[..3074 + 1]).unwrap();
    let e = error_text(CifarBinary::open(&dir, Split::Train));
    assert!(e.contains("train.bin") && e.contains("record 1"), "{e}");

    let nothing = tempfile::tempdir().unwrap();
    let e = error_text(CifarBinary::open(nothing.path(), Split::Train));
    assert!(e.contains("no CIFAR binary files"), "{e}");
}

/// Untrusted files are read bounded and only when regular: a FIFO (whose open would block
/// forever), a symbolic link to `/dev/zero` (endless), a directory, and files larger than
/// their format can be (sparse, so they take no disk) are each refused with the file named,
/// through the list, ImageNet-LT JSON, image and checkpoint readers and end to end through
/// `runtime train --train-list` (under a deadline: a hang fails the test).
#[cfg(unix)]
#[test]
fn fifos_devices_directories_and_oversized_files_are_refused_unread() {
    use dscl_runtime::data::decode_image_file;
    use dscl_runtime::io::checkpoint::Checkpoint;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("list.fifo");
    let c_path = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let zero = dir.path().join("zero.png");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let sparse = |name: &str, len: u64| {
        let path = dir.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    };
    let huge_json = sparse("huge.json", 3 << 30);
    let huge_image = sparse("huge.jpg", 300 << 20);
    let huge_checkpoint = sparse("huge.safetensors", 17 << 30);

    let not_regular = "not a regular file";
    for (what, err, says) in [
        (
            "FIFO list",
            error_text(ListFile::open(&fifo, dir.path(), None)),
            not_regular,
        ),
        (
            "FIFO checkpoint",
            error_text(Checkpoint::read(&fifo)),
            not_regular,
        ),
        (
            "/dev/zero image",
            error_text(decode_image_file(&zero)),
            not_regular,
        ),
        (
            "directory list",
            error_text(ListFile::open(dir.path(), dir.path(), None)),
            "is a directory",
        ),
        (
            "3 GiB JSON",
            error_text(ImageNetLtJson::open(&huge_json, dir.path())),
            "more than the 2048 MiB",
        ),
        (
            "300 MiB image",
            error_text(decode_image_file(&huge_image)),
            "more than the 256 MiB",
        ),
        (
            "17 GiB checkpoint",
            error_text(Checkpoint::read(&huge_checkpoint)),
            "more than the 16384 MiB",
        ),
    ] {
        assert!(err.contains(says), "{what}: {err}");
    }

    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["train", "--epochs", "1", "--train-list"])
        .arg(&fifo)
        .arg("--out")
        .arg(dir.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("runtime train on a FIFO list hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(not_regular), "{stderr}");
}

/// The resolved configuration of `runtime train` with these data flags and no others.
fn config(data: DataArgs) -> RunConfig {
    RunConfig::resolve(&data, &TrainArgs::default(), &LinearArgs::default(), 0).unwrap()
}

/// Writes `text` to `dir/name` and returns its path.
fn write_text(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A 2x2 PNG at `dir/relative`, creating its directories.
fn small_png(dir: &Path, relative: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_png_rgb(&path, 2, 2, [9, 9, 9]);
}

/// `runtime train` on a list or JSON (`flag FILE`) with the data's directory as the root and
/// an output directory beside it.
fn train_on(dir: &Path, flag: &str, file: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec!["train".into(), flag.into(), file.display().to_string()];
    args.extend(["--out".into(), dir.join("out").display().to_string()]);
    // A network small enough for any machine, so the memory check passes and the data's
    // checks are what decide.
    args.extend(
        [
            "--arch",
            "tiny",
            "--image-size",
            "8",
            "--batch-size",
            "4",
            "--queue",
            "8",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    runtime(&args)
}

/// Labels are bounded by MAX_CLASSES before anything is sized by them: a list label of 4e9 or
/// of exactly a million and a JSON num_classes of 4e9 are each refused naming where and the
/// maximum, through the library and through `runtime train`.
#[test]
fn labels_above_the_maximum_are_refused_naming_the_maximum() {
    assert_eq!(MAX_CLASSES, 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let too_large = |label: &str| {
        format!("label {label} is above 999999, the largest supported (at most 1000000 classes)")
    };

    let list = write_text(d, "train.txt", "a.png 0\nb.png 4000000000\n");
    let e = error_text(ListFile::open(&list, d, None));
    assert_eq!(
        e,
        format!("{}:2: {}", list.display(), too_large("4000000000"))
    );
    let o = train_on(d, "--train-list", &list, &[]);
    assert_refused(&o, &["train.txt:2: ", &too_large("4000000000")]);

    std::fs::write(&list, "a.png 1000000\n").unwrap();
    let e = error_text(ListFile::open(&list, d, None));
    assert_eq!(e, format!("{}:1: {}", list.display(), too_large("1000000")));
    let o = train_on(d, "--train-list", &list, &[]);
    assert_refused(&o, &["train.txt:1: ", &too_large("1000000")]);

    // The largest label supported indexes without a per-class allocation.
    std::fs::write(&list, "a.png 999999\n").unwrap();
    assert_eq!(
        ListFile::open(&list, d, None).unwrap().num_classes(),
        MAX_CLASSES
    );

    let json = write_text(
        d,
        "train.json",
        r#"{"num_classes": 4000000000, "annotations": [{"fpath": "a.png", "category_id": 0}]}"#,
    );
    let said = "num_classes is 4000000000, more than the 1000000 classes supported";
    let e = error_text(ImageNetLtJson::open(&json, d));
    assert_eq!(e, format!("ImageNet-LT JSON {}: {said}", json.display()));
    let o = train_on(d, "--imagenet-lt-json", &json, &[]);
    assert_refused(&o, &[said]);
}

/// Label ranges read "labels 0 to N-1": a list label past a given class count, a JSON
/// category_id past num_classes, and a test label past the model's classes.
#[test]
fn label_ranges_are_written_0_to_n_minus_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_png(d, "a.png");
    small_png(d, "b.png");

    let list = write_text(d, "list.txt", "a.png 0\nb.png 10\n");
    let e = error_text(ListFile::open(&list, d, Some(10)));
    assert_eq!(
        e,
        format!(
            "{}:2: label 10 is out of range: there are 10 classes (labels 0 to 9)",
            list.display()
        )
    );

    let json = write_text(
        d,
        "test.json",
        r#"{"num_classes": 5, "annotations": [{"fpath": "a.png", "category_id": 5}]}"#,
    );
    let e = error_text(ImageNetLtJson::open(&json, d));
    assert!(
        e.ends_with("has category_id 5, out of range: num_classes is 5 (labels 0 to 4)"),
        "{e}"
    );

    let test = write_text(d, "test.txt", "a.png 1\nb.png 7\n");
    let cfg = config(DataArgs {
        train_list: Some(list.clone()),
        test_list: Some(test.clone()),
        ..Default::default()
    });
    let e = error_text(open_test(&cfg, 5));
    assert_eq!(
        e,
        format!(
            "{} (listed at {}:2): label 7 is out of range: the model has 5 classes (labels 0 \
             to 4)",
            d.join("b.png").display(),
            test.display()
        )
    );
    std::fs::write(&test, "a.png 1\nb.png 4\n").unwrap();
    assert_eq!(open_test(&cfg, 5).unwrap().labels(), &[1, 4]);
}

/// A UTF-8 byte-order mark starting a list or a JSON file is skipped, and invisible or
/// control characters in a label or path an error quotes are shown escaped.
#[test]
fn byte_order_marks_are_skipped_and_invisible_characters_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_png(d, "imgs/a.png");
    small_png(d, "imgs/b.png");

    let list = write_text(d, "bom.txt", "\u{feff}imgs/a.png 1\nimgs/b.png 0\n");
    let data = ListFile::open_checked(&list, d, None, false).unwrap();
    assert_eq!(data.path(0), d.join("imgs/a.png"));
    assert_eq!(data.labels(), &[1, 0]);
    assert!(data.load(0).is_ok());

    let json = write_text(
        d,
        "bom.json",
        "\u{feff}{\"num_classes\": 2, \"annotations\": [{\"fpath\": \"imgs/b.png\", \
         \"category_id\": 1}, {\"fpath\": \"imgs/a.png\", \"category_id\": 0}]}",
    );
    let data = ImageNetLtJson::open_checked(&json, d, false).unwrap();
    assert_eq!(data.path(0), d.join("imgs/b.png"));
    assert_eq!(data.labels(), &[1, 0]);

    // A zero-width space after a label, through the command.
    let list = write_text(d, "zw.txt", "imgs/a.png 0\nimgs/b.png 1\u{200b}\n");
    let o = train_on(d, "--train-list", &list, &[]);
    assert_refused(
        &o,
        &["zw.txt:2: the label `1\\u{200b}` is not a non-negative integer"],
    );
    // A control character inside a label.
    let list = write_text(d, "bell.txt", "imgs/a.png 0\u{7}1\n");
    let e = error_text(ListFile::open(&list, d, None));
    assert!(
        e.ends_with("the label `0\\u{7}1` is not a non-negative integer"),
        "{e}"
    );
    // A tab inside a path (the label is the last field), in the missing-file error.
    let list = write_text(d, "tab.txt", "imgs/a.png 0\nimgs/a\tb.png 1\n");
    let e = error_text(ListFile::open_checked(&list, d, None, false));
    assert!(e.contains("imgs/a\\tb.png (listed at "), "{e}");
}

/// Listed files that do not exist are found when the list or JSON is indexed: an error
/// naming how many and the first ones with their lines, or with --skip-bad a one-line report
/// and an index without them; none left is an error.
#[test]
fn missing_listed_files_are_reported_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["a.png", "b.png", "c.png"] {
        small_png(d, name);
    }
    std::fs::create_dir(d.join("dir.png")).unwrap();
    let list = write_text(
        d,
        "list.txt",
        "# header\na.png 0\ngone.png 1\nb.png 1\ndir.png 0\nc.png 2\n",
    );
    let data = ListFile::open(&list, d, None).unwrap();
    assert_eq!(data.missing_files(), [1, 3]);
    let e = error_text(data.clone().check_files(false));
    assert_eq!(
        e,
        format!(
            "2 of 5 listed images do not exist or are not regular files: {} (listed at \
             {l}:3): no such file; {} (listed at {l}:5): a directory; --skip-bad leaves them \
             out",
            d.join("gone.png").display(),
            d.join("dir.png").display(),
            l = list.display()
        )
    );
    let kept = data.check_files(true).unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept.labels(), &[0, 1, 2]);
    assert_eq!((kept.line(0), kept.line(1), kept.line(2)), (2, 4, 6));

    // Links count as what they point to.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(d.join("a.png"), d.join("good-link.png")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere.png"), d.join("bad-link.png")).unwrap();
        let links = write_text(d, "links.txt", "good-link.png 0\nbad-link.png 1\n");
        let data = ListFile::open(&links, d, None).unwrap();
        assert_eq!(data.missing_files(), [1]);
        let e = error_text(data.check_files(false));
        assert!(e.contains("bad-link.png (listed at "), "{e}");
    }

    let json = write_text(
        d,
        "train.json",
        r#"{"num_classes": 3, "annotations": [{"fpath": "a.png", "category_id": 0},
            {"fpath": "nope.png", "category_id": 1}, {"fpath": "c.png", "category_id": 2}]}"#,
    );
    let e = error_text(ImageNetLtJson::open_checked(&json, d, false));
    assert!(
        e.starts_with("1 of 3 listed images does not exist or is not a regular file: ")
            && e.contains("nope.png (annotation 1 of "),
        "{e}"
    );
    let kept = ImageNetLtJson::open_checked(&json, d, true).unwrap();
    assert_eq!(kept.labels(), &[0, 2]);
    assert!(kept.describe(1).contains("(annotation 2 of "));

    let none = write_text(d, "none.txt", "x.png 0\ny.png 1\n");
    let e = error_text(ListFile::open_checked(&none, d, None, true));
    assert!(
        e.starts_with("--skip-bad left no image: all 2 listed files are missing (first: "),
        "{e}"
    );

    // Through the command: refused before any work, or skipped with a report.
    let o = train_on(d, "--train-list", &list, &[]);
    assert_refused(
        &o,
        &[
            "2 of 5 listed images do not exist",
            "list.txt:3): no such file",
        ],
    );
    let o = train_on(d, "--train-list", &list, &["--skip-bad"]);
    let all = text(&o);
    assert!(
        all.contains(&format!(
            "skipping 2 listed images that do not exist (first: {} (listed at {}:3): no such \
             file)",
            d.join("gone.png").display(),
            list.display()
        )),
        "{all}"
    );
    // It went on past indexing with the three that exist (and stopped at the batch size).
    assert!(all.contains("(3 images)"), "{all}");
    let o = train_on(d, "--train-list", &none, &["--skip-bad"]);
    assert_refused(
        &o,
        &["--skip-bad left no image: all 2 listed files are missing"],
    );
}

/// The training set needs two classes with images; classes with none are reported in one
/// line naming up to ten, and training goes on.
#[test]
fn training_classes_are_checked_and_empty_ones_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_png(d, "a.png");
    small_png(d, "b.png");
    let list_cfg = |text: &str| {
        let list = write_text(d, "train.txt", text);
        config(DataArgs {
            train_list: Some(list),
            ..Default::default()
        })
    };

    let e = error_text(open_train(&list_cfg("a.png 3\nb.png 3\n")));
    assert_eq!(
        e,
        "the training set has one class (class 3, 2 images): contrastive and classification \
         training need at least two"
    );
    let set = open_train(&list_cfg("a.png 0\nb.png 5\n")).unwrap();
    assert_eq!(
        check_train_classes(set.as_ref(), None).unwrap().unwrap(),
        "4 of 6 classes have no training image (classes 1, 2, 3, 4); training goes on with \
         the other 2"
    );
    let set = open_train(&list_cfg("a.png 0\nb.png 16\n")).unwrap();
    assert_eq!(
        check_train_classes(set.as_ref(), None).unwrap().unwrap(),
        "15 of 17 classes have no training image (classes 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \
         and 5 more); training goes on with the other 2"
    );
    let set = open_train(&list_cfg("a.png 1\nb.png 0\n")).unwrap();
    assert_eq!(check_train_classes(set.as_ref(), None).unwrap(), None);

    // An image folder: an empty class directory is reported by name, through the command.
    let folder = d.join("folder");
    small_png(&folder, "ant/1.png");
    small_png(&folder, "cat/1.png");
    std::fs::create_dir(folder.join("bee")).unwrap();
    let cfg = config(DataArgs {
        image_folder: Some(folder.clone()),
        ..Default::default()
    });
    let set = open_train(&cfg).unwrap();
    let names = ImageFolder::open(&folder).unwrap().class_names().to_vec();
    let report = "1 of 3 classes has no training image (class 1 `bee`); training goes on \
                  with the other 2";
    assert_eq!(
        check_train_classes(set.as_ref(), Some(&names))
            .unwrap()
            .unwrap(),
        report
    );
    let o = train_on(d, "--image-folder", &folder, &[]);
    assert!(text(&o).contains(report), "{}", text(&o));
    std::fs::remove_dir_all(folder.join("cat")).unwrap();
    let o = train_on(d, "--image-folder", &folder, &[]);
    assert_refused(
        &o,
        &["the training set has one class (class 0 `ant`, 1 image): contrastive"],
    );
}

/// A test image folder is labelled by the training folder's class names: a folder lacking a
/// class, one with every class, and one with a class training never had.
#[test]
fn test_image_folder_classes_are_matched_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = d.join("train");
    for class in ["ant", "bee", "cat"] {
        small_png(&train, &format!("{class}/1.png"));
    }
    std::fs::write(train.join("notes.txt"), "a file, not a class").unwrap();
    let test = d.join("test");
    let cfg = config(DataArgs {
        image_folder: Some(train.clone()),
        test_image_folder: Some(test.clone()),
        ..Default::default()
    });

    small_png(&test, "cat/x.png");
    small_png(&test, "bee/y.png");
    small_png(&test, "bee/z.png");
    // Alone, the folder would number bee 0 and cat 1.
    assert_eq!(ImageFolder::open(&test).unwrap().labels(), &[0, 0, 1]);
    let set = open_test(&cfg, 3).unwrap();
    assert_eq!(set.labels(), &[1, 1, 2]);
    assert_eq!(set.num_classes(), 3);

    small_png(&test, "ant/w.png");
    assert_eq!(open_test(&cfg, 3).unwrap().labels(), &[0, 1, 1, 2]);

    small_png(&test, "dog/v.png");
    let e = error_text(open_test(&cfg, 3));
    assert_eq!(
        e,
        format!(
            "class directory {} is not a training class; the 3 training classes are ant, bee, \
             cat",
            test.join("dog").display()
        )
    );
    std::fs::remove_dir_all(test.join("dog")).unwrap();
    // The model's class count must still be the training folder's.
    let e = error_text(open_test(&cfg, 4));
    assert!(e.contains("now has 3 classes but the model has 4"), "{e}");
}

/// The index limit is process-wide, so this runs in a process of its own: the test binary
/// again, with only this test.
#[test]
fn index_limit_is_settable_and_named_when_exceeded() {
    use dscl_runtime::io::bounded_read::{index_limit, set_index_limit, DEFAULT_INDEX_LIMIT};
    const CHILD: &str = "DSCL_INDEX_LIMIT_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "index_limit_is_settable_and_named_when_exceeded",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1");
        let o = common::output_within(c, common::DEADLINE);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("1 passed"), "{}", text(&o));
        return;
    }
    assert_eq!(index_limit(), DEFAULT_INDEX_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let line = "some/image.png 0\n";
    let big = write_text(d, "big.txt", &line.repeat((2 << 20) / line.len() + 1));
    let size = std::fs::metadata(&big).unwrap().len();

    set_index_limit(1 << 20);
    let e = error_text(ListFile::open(&big, d, None));
    assert_eq!(
        e,
        format!(
            "index file {} is {size} bytes, more than the 1 MiB an index file may have; \
             refusing to read it (--max-index-mib raises the limit)",
            big.display()
        )
    );
    set_index_limit(4096);
    let json = write_text(
        d,
        "a.json",
        &format!(
            r#"{{"num_classes": 1, "annotations": [{{"fpath": "{}", "category_id": 0}}]}}"#,
            "x".repeat(5000)
        ),
    );
    let e = error_text(ImageNetLtJson::open(&json, d));
    assert!(
        e.contains("more than the 4096 bytes an index file may have"),
        "{e}"
    );
    let small = write_text(d, "small.txt", &line.repeat(4096 / line.len()));
    assert_eq!(
        ListFile::open(&small, d, None).unwrap().len(),
        4096 / line.len()
    );
    set_index_limit(DEFAULT_INDEX_LIMIT);
    assert_eq!(
        ListFile::open(&big, d, None).unwrap().len(),
        (2 << 20) / line.len() + 1
    );
}
