//! Image decoding as the loader does it: arbitrary bytes through the PNG/JPEG decoder, then
//! (for a decoded image) through the stage-1, stage-2 and evaluation views. An error or views
//! of the stated size with finite values; never a panic.
#![no_main]

use dscl_runtime::augment::{eval_view, stage1_views, stage2_view, AugmentConfig};
use dscl_runtime::data::{decode_image_bytes, sample_rng};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(image) = decode_image_bytes(bytes) else {
        return;
    };
    assert_eq!(image.pixels.len(), 3 * image.width * image.height);
    assert!(image.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    // Small views keep each run fast; 64 is the smallest size that takes the evaluation
    // centre-crop path.
    for size in [8, 64] {
        let cfg = AugmentConfig::for_image_size(size);
        let mut rng = sample_rng(bytes.len() as u64, size as u64);
        let views = stage1_views(&image, &cfg, &mut rng);
        let view_len = 3 * size * size;
        assert_eq!(views.query.len(), view_len);
        assert_eq!(views.key.len(), view_len);
        assert_eq!(views.crops.len(), cfg.crops);
        let stage2 = stage2_view(&image, &cfg, &mut rng);
        let eval = eval_view(&image, &cfg);
        assert_eq!(stage2.len(), view_len);
        assert_eq!(eval.len(), view_len);
        let all = views
            .query
            .iter()
            .chain(&views.key)
            .chain(views.crops.iter().flatten());
        assert!(all.chain(&stage2).chain(&eval).all(|x| x.is_finite()));
    }
});
