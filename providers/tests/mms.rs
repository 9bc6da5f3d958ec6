//! Fitting attachments within RingCentral's MMS limits.

use std::io::Cursor;

use bytes::Bytes;
use commcenter_providers::{
    Attachment,
    mms::{self, MAX_TOTAL_BYTES, MmsRefusal},
};
use image::{ImageFormat, RgbImage, codecs::jpeg::JpegEncoder};

/// A photo-like JPEG of at least `min_bytes`: smooth light with fine grain, which
/// compresses like a camera picture rather than like a flat test pattern.
fn photo(width: u32, height: u32, min_bytes: usize) -> Bytes {
    let mut seed = 0x2545_f491_u32;
    let image = RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let grain = (seed % 48) as i32 - 24;
        let light = |base: u32| ((base as i32 + grain).clamp(0, 255)) as u8;
        image::Rgb([
            light(x * 255 / width),
            light(y * 255 / height),
            light((x + y) * 128 / (width + height) + 64),
        ])
    });
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 97)
        .encode_image(&image)
        .expect("encode");
    assert!(
        out.len() >= min_bytes,
        "the test photo has {} bytes",
        out.len()
    );
    Bytes::from(out)
}

fn file(name: &str, content_type: &str, size: usize) -> Attachment {
    Attachment {
        name: name.into(),
        content_type: content_type.into(),
        bytes: Bytes::from(vec![7u8; size]),
    }
}

fn total(attachments: &[Attachment]) -> u64 {
    attachments.iter().map(|a| a.bytes.len() as u64).sum()
}

#[test]
fn a_4_mb_photo_is_recompressed_under_the_limit() {
    let original = photo(2800, 2100, 4_000_000);
    let card = file("contact.vcf", "text/vcard", 2_000);
    let fitted = mms::fit(vec![
        Attachment {
            name: "IMG_0001.png".into(),
            content_type: "image/jpg".into(),
            bytes: original.clone(),
        },
        card.clone(),
    ])
    .expect("fits");
    assert!(
        total(&fitted) <= MAX_TOTAL_BYTES,
        "{} bytes",
        total(&fitted)
    );
    assert_eq!(fitted[0].name, "IMG_0001.jpg");
    assert_eq!(fitted[0].content_type, "image/jpeg");
    assert_eq!(fitted[1], card, "what is not a photo is untouched");
    // Still a picture, the same way up, though perhaps smaller.
    let decoded = image::load(Cursor::new(&fitted[0].bytes), ImageFormat::Jpeg).expect("a JPEG");
    assert!(decoded.width() > decoded.height());
    assert!(decoded.width() >= 320);
    assert!(mms::check(&fitted).is_ok());
}

#[test]
fn attachments_that_fit_are_returned_as_they_are() {
    let small = photo(400, 300, 10_000);
    let files = vec![
        Attachment {
            name: "small.jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: small,
        },
        file("song.mp3", "audio/mpeg", 500_000),
    ];
    assert_eq!(mms::fit(files.clone()).expect("fits"), files);
}

#[test]
fn what_cannot_fit_is_refused_with_the_reason() {
    let eleven: Vec<_> = (0..11)
        .map(|n| file(&format!("{n}.gif"), "image/gif", 100))
        .collect();
    assert_eq!(mms::fit(eleven), Err(MmsRefusal::TooManyFiles(11)));

    let video = file("clip.mp4", "video/mp4", 2_000_000);
    assert_eq!(
        mms::fit(vec![video]),
        Err(MmsRefusal::TooLarge { bytes: 2_000_000 })
    );

    let pdf = file("plan.pdf", "application/pdf", 1_000);
    assert_eq!(
        mms::fit(vec![pdf]),
        Err(MmsRefusal::UnsupportedType {
            content_type: "application/pdf".into()
        })
    );

    // A photo beside 1.49 MB of video: no rendition of the photo is small enough.
    let crowded = vec![
        Attachment {
            name: "a.jpg".into(),
            content_type: "image/jpeg".into(),
            bytes: photo(1200, 900, 300_000),
        },
        file("clip.3gp", "video/3gpp", 1_499_500),
    ];
    assert_eq!(mms::fit(crowded), Err(MmsRefusal::CannotShrink));

    let broken = Attachment {
        name: "broken.png".into(),
        content_type: "image/png".into(),
        bytes: Bytes::from(vec![1u8; 2_000_000]),
    };
    assert!(
        matches!(mms::fit(vec![broken]), Err(MmsRefusal::Undecodable { name, .. }) if name == "broken.png")
    );
}

#[test]
fn precheck_looks_at_types_sizes_and_counts_only() {
    assert_eq!(
        mms::precheck(&[("image/jpeg", 8_000_000), ("text/vcard", 1_000)]),
        Ok(())
    );
    assert_eq!(
        mms::precheck(&[("video/mp4", 2_000_000)]),
        Err(MmsRefusal::TooLarge { bytes: 2_000_000 })
    );
    assert_eq!(
        mms::precheck(&[("image/gif", 900_000), ("application/zip", 700_000)]),
        Err(MmsRefusal::TooLarge { bytes: 1_600_000 }),
        "GIFs are not recompressed"
    );
    assert_eq!(
        mms::precheck(&[("text/html", 10)]),
        Err(MmsRefusal::UnsupportedType {
            content_type: "text/html".into()
        })
    );
    assert_eq!(
        mms::precheck(&vec![("image/png", 10); 11]),
        Err(MmsRefusal::TooManyFiles(11))
    );
    assert_eq!(
        mms::precheck(&[("IMAGE/PNG; name=x.png", 10), ("audio/mp3", 10)]),
        Ok(())
    );
}

#[test]
fn check_holds_the_exact_limits() {
    assert!(mms::check(&[file("a.zip", "application/zip", MAX_TOTAL_BYTES as usize)]).is_ok());
    assert_eq!(
        mms::check(&[file("a.jpg", "image/jpeg", MAX_TOTAL_BYTES as usize + 1)]),
        Err(MmsRefusal::TooLarge {
            bytes: MAX_TOTAL_BYTES + 1
        })
    );
    let refusal: commcenter_providers::ProviderError = MmsRefusal::TooManyFiles(11).into();
    assert!(refusal.is_permanent());
    assert_eq!(refusal.code.as_deref(), Some("mms_too_many_files"));
}
