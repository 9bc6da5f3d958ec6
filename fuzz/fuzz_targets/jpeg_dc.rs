//! The 1/8-scale JPEG decoder reads hostile bytes: it decodes, says unsupported or says
//! corrupt, never panics, and what it decodes has the size its header promised.
#![no_main]

use commcenter_workers::media::jpeg_dc::decode_eighth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(eighth) = decode_eighth(bytes) {
        let channels = if eighth.gray { 1 } else { 3 };
        assert_eq!(
            eighth.pixels.len(),
            eighth.width as usize * eighth.height as usize * channels
        );
    }
});
