//! The 1/8-scale JPEG decoder reads hostile bytes: it decodes, says unsupported or says
//! corrupt, never panics, and what it decodes has the size its header promised.
//!
//! As in the thumbnailer, only frames that pass a size gate reach it. The gate here is
//! 16 megapixels, below the thumbnailer's 100: the decoder's paths do not depend on the
//! size, and small frames keep the fuzzer fast.
#![no_main]

use commcenter_workers::media::jpeg_dc::decode_eighth;
use libfuzzer_sys::fuzz_target;

const MAX_PIXELS: u64 = 16_000_000;

fuzz_target!(|bytes: &[u8]| {
    let mut header = jpeg_decoder::Decoder::new(bytes);
    let Ok(()) = header.read_info() else {
        return;
    };
    let Some(info) = header.info() else {
        return;
    };
    if u64::from(info.width) * u64::from(info.height) > MAX_PIXELS {
        return;
    }
    if let Ok(eighth) = decode_eighth(bytes) {
        let channels = if eighth.gray { 1 } else { 3 };
        assert_eq!(
            eighth.pixels.len(),
            eighth.width as usize * eighth.height as usize * channels
        );
        assert_eq!(eighth.width, u32::from(info.width).div_ceil(8));
        assert_eq!(eighth.height, u32::from(info.height).div_ceil(8));
    }
});
