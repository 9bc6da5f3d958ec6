//! RingCentral's MMS limits, and fitting attachments within them: at most 1.5 MB in all,
//! 10 files, of the types it lists. Photos too large are re-encoded as JPEG, first at
//! lower quality and then at smaller sizes, until the whole fits; anything else that does
//! not fit is refused with the reason.

use std::io::Cursor;

use bytes::Bytes;
use image::{
    DynamicImage, ImageDecoder, ImageReader, codecs::jpeg::JpegEncoder, imageops::FilterType,
};

use crate::error::ProviderError;

/// One file sent with an MMS or an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// Attachments per MMS.
pub const MAX_FILES: usize = 10;
/// Bytes of attachments per MMS (RingCentral says 1.5 MB; read as decimal, the stricter).
pub const MAX_TOTAL_BYTES: u64 = 1_500_000;

/// Why attachments cannot go in an MMS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MmsRefusal {
    #[error("an MMS carries at most {MAX_FILES} attachments, not {0}")]
    TooManyFiles(usize),
    #[error("RingCentral does not send {content_type} in an MMS")]
    UnsupportedType { content_type: String },
    #[error(
        "attachments that cannot be recompressed add up to {bytes} bytes, over the MMS limit of {MAX_TOTAL_BYTES}"
    )]
    TooLarge { bytes: u64 },
    #[error("the images cannot be made small enough for an MMS beside the other attachments")]
    CannotShrink,
    #[error("{name} is not a readable image: {reason}")]
    Undecodable { name: String, reason: String },
}

impl From<MmsRefusal> for ProviderError {
    fn from(refusal: MmsRefusal) -> Self {
        let code = match refusal {
            MmsRefusal::TooManyFiles(_) => "mms_too_many_files",
            MmsRefusal::UnsupportedType { .. } => "mms_unsupported_type",
            MmsRefusal::TooLarge { .. } | MmsRefusal::CannotShrink => "mms_too_large",
            MmsRefusal::Undecodable { .. } => "mms_undecodable_image",
        };
        ProviderError::permanent(code, refusal.to_string())
    }
}

/// The MIME type RingCentral knows a file by, if it takes it at all (aliases accepted).
pub fn mms_type(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/png" => "image/png",
        "image/bmp" | "image/x-bmp" | "image/x-ms-bmp" => "image/bmp",
        "image/gif" => "image/gif",
        "image/tiff" => "image/tiff",
        "image/svg+xml" => "image/svg+xml",
        "video/3gpp" => "video/3gpp",
        "video/mp4" => "video/mp4",
        "video/mpeg" => "video/mpeg",
        "video/x-msvideo" | "video/avi" | "video/msvideo" => "video/x-msvideo",
        "audio/mpeg" | "audio/mp3" => "audio/mpeg",
        "text/vcard" | "text/x-vcard" => "text/vcard",
        "application/zip" | "application/x-zip-compressed" => "application/zip",
        "application/gzip" | "application/x-gzip" => "application/gzip",
        "application/rtf" | "text/rtf" => "application/rtf",
        _ => return None,
    })
}

/// Raster images we re-encode. GIFs are left alone (a JPEG would lose the animation),
/// and so is SVG (not pixels).
fn recompressible(mms_type: &str) -> bool {
    matches!(
        mms_type,
        "image/jpeg" | "image/png" | "image/bmp" | "image/tiff"
    )
}

/// Cheap check on types and sizes only, for the API before anything is queued: can files
/// of these `(content type, size)` ever fit? Oversized photos pass: `fit` shrinks them.
pub fn precheck(files: &[(&str, u64)]) -> Result<(), MmsRefusal> {
    if files.len() > MAX_FILES {
        return Err(MmsRefusal::TooManyFiles(files.len()));
    }
    let mut fixed = 0;
    for (content_type, size) in files {
        let kind = mms_type(content_type).ok_or_else(|| MmsRefusal::UnsupportedType {
            content_type: (*content_type).to_owned(),
        })?;
        if !recompressible(kind) {
            fixed += size;
        }
    }
    if fixed > MAX_TOTAL_BYTES {
        return Err(MmsRefusal::TooLarge { bytes: fixed });
    }
    Ok(())
}

/// The exact limits, on the files as they will be sent.
pub fn check(attachments: &[Attachment]) -> Result<(), MmsRefusal> {
    if attachments.len() > MAX_FILES {
        return Err(MmsRefusal::TooManyFiles(attachments.len()));
    }
    if let Some(refused) = attachments
        .iter()
        .find(|a| mms_type(&a.content_type).is_none())
    {
        return Err(MmsRefusal::UnsupportedType {
            content_type: refused.content_type.clone(),
        });
    }
    let total = total_bytes(attachments);
    if total > MAX_TOTAL_BYTES {
        return Err(MmsRefusal::TooLarge { bytes: total });
    }
    Ok(())
}

/// Renditions tried in turn until the images fit: longest side (None: as is) and JPEG
/// quality. Quality drops first; then the size, which is what MMS recipients see anyway.
const RENDITIONS: [(Option<u32>, u8); 10] = [
    (None, 80),
    (None, 65),
    (Some(2048), 70),
    (Some(1600), 70),
    (Some(1280), 65),
    (Some(1024), 60),
    (Some(800), 55),
    (Some(640), 50),
    (Some(480), 45),
    (Some(320), 40),
];

/// Fits attachments within the MMS limits (see the module doc). CPU-bound: callers run
/// it in `spawn_blocking`.
pub fn fit(attachments: Vec<Attachment>) -> Result<Vec<Attachment>, MmsRefusal> {
    precheck(
        &attachments
            .iter()
            .map(|a| (a.content_type.as_str(), a.bytes.len() as u64))
            .collect::<Vec<_>>(),
    )?;
    let attachments: Vec<Attachment> = attachments
        .into_iter()
        .map(|a| Attachment {
            content_type: mms_type(&a.content_type).unwrap_or_default().to_owned(),
            ..a
        })
        .collect();
    if total_bytes(&attachments) <= MAX_TOTAL_BYTES {
        return Ok(attachments);
    }
    let photos: Vec<(usize, DynamicImage)> = attachments
        .iter()
        .enumerate()
        .filter(|(_, a)| recompressible(&a.content_type))
        .map(|(index, a)| decode(a).map(|image| (index, image)))
        .collect::<Result<_, _>>()?;
    for (longest_side, quality) in RENDITIONS {
        let mut candidate = attachments.clone();
        for (index, image) in &photos {
            let original = &attachments[*index];
            let encoded = encode_jpeg(image, longest_side, quality);
            if let Some(encoded) = encoded.filter(|encoded| encoded.len() < original.bytes.len()) {
                candidate[*index] = Attachment {
                    name: jpeg_name(&original.name),
                    content_type: "image/jpeg".into(),
                    bytes: encoded,
                };
            }
        }
        if total_bytes(&candidate) <= MAX_TOTAL_BYTES {
            return Ok(candidate);
        }
    }
    Err(MmsRefusal::CannotShrink)
}

fn total_bytes(attachments: &[Attachment]) -> u64 {
    attachments.iter().map(|a| a.bytes.len() as u64).sum()
}

/// Decodes an image upright (camera photos are often stored sideways with an EXIF
/// orientation, which re-encoding would drop).
fn decode(attachment: &Attachment) -> Result<DynamicImage, MmsRefusal> {
    let undecodable = |reason: String| MmsRefusal::Undecodable {
        name: attachment.name.clone(),
        reason,
    };
    let mut decoder = ImageReader::new(Cursor::new(&attachment.bytes))
        .with_guessed_format()
        .map_err(|e| undecodable(e.to_string()))?
        .into_decoder()
        .map_err(|e| undecodable(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| undecodable(e.to_string()))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| undecodable(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// The image as a JPEG; None if the encoder refuses it (dimensions beyond JPEG's).
fn encode_jpeg(image: &DynamicImage, longest_side: Option<u32>, quality: u8) -> Option<Bytes> {
    let resized;
    let image = match longest_side {
        Some(side) if image.width().max(image.height()) > side => {
            resized = image.resize(side, side, FilterType::Triangle);
            &resized
        }
        _ => image,
    };
    let mut out = Vec::new();
    // JPEG has no alpha: transparent pixels keep their colour.
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&image.to_rgb8())
        .ok()?;
    Some(Bytes::from(out))
}

/// `photo.png` → `photo.jpg`.
fn jpeg_name(name: &str) -> String {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    format!("{stem}.jpg")
}
