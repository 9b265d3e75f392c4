//! The file-backed data sets against files the tests write: list files, ImageNet-LT JSON,
//! image folders (PNG and JPEG, gray and RGB), corrupt images, CIFAR-10/100 binaries.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use dscl_runtime::data::{
    CifarBinary, CifarKind, Dataset, ImageFolder, ImageNetLtJson, ListFile, Split,
};
use image::{GrayImage, Luma, Rgb, RgbImage};

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

#[test]
fn million_line_list_indexes_without_opening_images() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("train.txt");
    let mut text = String::with_capacity(40_000_000);
    text.push_str("# ImageNet-LT style list; none of these files exist\n");
    for i in 0..1_000_000u32 {
        text.push_str(&format!(
            "train/n{:08}/n{:08}_{i}.JPEG {}\n",
            i % 1000,
            i % 1000,
            i % 1000
        ));
    }
    std::fs::write(&list, text).unwrap();

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

    std::fs::create_dir(root.join("dog")).unwrap();
    let e = error_text(ImageFolder::open(root));
    assert!(e.contains("dog") && e.contains("no png/jpg/jpeg"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    assert!(error_text(ImageFolder::open(empty.path())).contains("no class subdirectory"));
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
    use dscl_runtime::checkpoint::Checkpoint;
    use dscl_runtime::data::decode_image_file;
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
