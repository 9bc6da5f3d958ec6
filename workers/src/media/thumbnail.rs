//! Thumbnails of uploaded images: JPEG, PNG, GIF (first frame), WebP, BMP and TIFF in;
//! a JPEG out (a PNG when the picture has transparency), its longest side `max_side`,
//! EXIF orientation applied.
//!
//! Safety first: the header's dimensions are checked against [`ImageLimits`] before any
//! pixel is decoded, and the decoders get the same limits (and a memory ceiling), so a
//! decompression bomb, a truncated or corrupt file fails with a [`ThumbnailError`] that
//! says why. A decoder that panics anyway (they are fuzzed, but are large) fails the
//! file the same way instead of taking the worker down.
//!
//! Speed: a JPEG is decoded at reduced scale (the "shrink on load" of libjpeg and
//! vips), so a 12-megapixel photo never becomes 36 MB of pixels and only the small
//! remainder of the reduction is a resample. At 1/8, the scale of any photo of 2,048 px
//! or more, a baseline JPEG is read from its DC coefficients alone (`jpeg_dc`, about
//! twice as fast as a general decoder); other JPEGs, and the 1/2 and 1/4 scales, use
//! `jpeg-decoder`'s reduced IDCT; `image` (zune-jpeg) is the last resort for what
//! `jpeg-decoder` does not support (arithmetic coding). The other formats go through
//! `image`, decoded whole, then reduced by area averaging.
//! Everything here is CPU-bound and blocking: callers run it in `spawn_blocking`.

use std::{
    io::Cursor,
    panic::{AssertUnwindSafe, catch_unwind},
};

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader,
    codecs::{jpeg::JpegEncoder, png::PngEncoder},
    imageops::FilterType,
    metadata::Orientation,
};

use super::{
    jpeg_dc::{self, DcError},
    sniff::{self, Sniffed},
};

/// The longest side of a thumbnail unless configured otherwise.
pub const DEFAULT_MAX_SIDE: u32 = 256;

/// JPEG quality of thumbnails: small files, no visible blocking at 256 px.
pub const JPEG_QUALITY: u8 = 80;

/// What an image may be before we decode it. Checked on the header's dimensions first,
/// then enforced by the decoders themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLimits {
    /// Widest image decoded, in pixels.
    pub max_width: u32,
    /// Tallest image decoded, in pixels.
    pub max_height: u32,
    /// Most pixels (width × height): the real measure of decoding work and memory.
    pub max_pixels: u64,
    /// Most bytes a decoder may allocate for one image.
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    /// 100 megapixels (a 12,000 × 8,000 panorama, twice a 48 MP phone photo), sides up
    /// to 30,000 px, 512 MiB of decoder memory: a 100 MP RGBA8 image needs 400 MB.
    fn default() -> Self {
        ImageLimits {
            max_width: 30_000,
            max_height: 30_000,
            max_pixels: 100_000_000,
            max_alloc: 512 << 20,
        }
    }
}

impl ImageLimits {
    /// Refuses dimensions over the limits (called with the header's, before decoding).
    pub fn check(&self, width: u32, height: u32) -> Result<(), ThumbnailError> {
        let too_large = |limit: String| {
            Err(ThumbnailError::TooLarge {
                width,
                height,
                limit,
            })
        };
        if width == 0 || height == 0 {
            return Err(ThumbnailError::Corrupt(format!(
                "the header says {width} × {height} pixels"
            )));
        }
        if width > self.max_width {
            return too_large(format!("{} pixels wide", self.max_width));
        }
        if height > self.max_height {
            return too_large(format!("{} pixels high", self.max_height));
        }
        if u64::from(width) * u64::from(height) > self.max_pixels {
            return too_large(format!("{} megapixels", self.max_pixels as f64 / 1e6));
        }
        Ok(())
    }

    fn decoder_limits(&self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }
}

/// A finished thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded JPEG or PNG.
    pub bytes: Vec<u8>,
    /// `image/jpeg` or `image/png`.
    pub mime: &'static str,
    /// `jpg` or `png`.
    pub extension: &'static str,
    /// The thumbnail's own size.
    pub width: u32,
    pub height: u32,
    /// The source image's size as shown (after its EXIF orientation).
    pub source_width: u32,
    pub source_height: u32,
}

/// Why no thumbnail could be made. The messages are meant for the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbnailError {
    #[error("{mime} is not an image we make thumbnails of")]
    NotAnImage { mime: &'static str },
    #[error("the image is {width} × {height} pixels, over the limit of {limit}")]
    TooLarge {
        width: u32,
        height: u32,
        limit: String,
    },
    #[error("the image would need more than {limit_mib} MiB of memory to decode")]
    TooMuchMemory { limit_mib: u64 },
    #[error("the image is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("the thumbnail could not be encoded: {0}")]
    Encode(String),
}

/// Makes a thumbnail of an image whose type was sniffed as `sniffed`, its longest side
/// `max_side` (an image already smaller keeps its size). Blocking and CPU-bound.
pub fn thumbnail(
    bytes: &[u8],
    sniffed: &Sniffed,
    limits: &ImageLimits,
    max_side: u32,
) -> Result<Thumbnail, ThumbnailError> {
    let max_side = max_side.max(1);
    let format = match *sniffed {
        sniff::JPEG => None,
        sniff::PNG => Some(ImageFormat::Png),
        sniff::GIF => Some(ImageFormat::Gif),
        sniff::WEBP => Some(ImageFormat::WebP),
        sniff::BMP => Some(ImageFormat::Bmp),
        sniff::TIFF => Some(ImageFormat::Tiff),
        other => return Err(ThumbnailError::NotAnImage { mime: other.mime }),
    };
    // A panic in a decoder is a bad file, not a dead worker.
    let made = catch_unwind(AssertUnwindSafe(|| {
        let decoded = match format {
            None => match decode_jpeg_scaled(bytes, limits, max_side) {
                Err(Fallback::Unsupported) => decode_with_image(bytes, ImageFormat::Jpeg, limits),
                Err(Fallback::Failed(e)) => Err(e),
                Ok(decoded) => Ok(decoded),
            },
            Some(format) => decode_with_image(bytes, format, limits),
        }?;
        finish(decoded, max_side)
    }));
    made.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".to_owned());
        tracing::warn!(panic = %what, "an image decoder panicked");
        Err(ThumbnailError::Corrupt(format!(
            "the decoder failed ({what})"
        )))
    })
}

/// The memory, in bytes, decoding this image for a thumbnail of `max_side` will take,
/// from its header alone: the pixels the decoder produces (a JPEG at the DCT scale it
/// will be decoded at; every coefficient of a progressive one), plus a tenth for the
/// resizing. Refuses what [`ImageLimits::check`] refuses, and what it cannot read.
pub fn decode_cost(
    bytes: &[u8],
    sniffed: &Sniffed,
    limits: &ImageLimits,
    max_side: u32,
) -> Result<u64, ThumbnailError> {
    let pixels = |w: u64, h: u64, per_pixel: u64| w * h * per_pixel;
    let produced = match *sniffed {
        sniff::JPEG => {
            use jpeg_decoder::{CodingProcess, Decoder, PixelFormat};
            let mut decoder = Decoder::new(bytes);
            decoder
                .read_info()
                .map_err(|e| ThumbnailError::Corrupt(e.to_string()))?;
            let info = decoder
                .info()
                .ok_or_else(|| ThumbnailError::Corrupt("no frame header".into()))?;
            let (w, h) = (u64::from(info.width), u64::from(info.height));
            limits.check(info.width.into(), info.height.into())?;
            let components = match info.pixel_format {
                PixelFormat::L8 => 1,
                PixelFormat::L16 => 2,
                PixelFormat::RGB24 => 3,
                PixelFormat::CMYK32 => 4,
            };
            if info.coding_process == CodingProcess::DctProgressive {
                pixels(w, h, components * 2) + pixels(w, h, components)
            } else {
                // The smallest scale whose image still covers the thumbnail.
                let side = u64::from(max_side.max(1));
                let scale = [8, 4, 2]
                    .into_iter()
                    .find(|s| w.max(h) / s >= side)
                    .unwrap_or(1);
                pixels(w.div_ceil(scale), h.div_ceil(scale), components)
            }
        }
        other => {
            let format = match other {
                sniff::PNG => ImageFormat::Png,
                sniff::GIF => ImageFormat::Gif,
                sniff::WEBP => ImageFormat::WebP,
                sniff::BMP => ImageFormat::Bmp,
                sniff::TIFF => ImageFormat::Tiff,
                other => return Err(ThumbnailError::NotAnImage { mime: other.mime }),
            };
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
            let mut header_limits = image::Limits::default();
            header_limits.max_alloc = Some(limits.max_alloc);
            reader.limits(header_limits);
            let decoder = reader
                .into_decoder()
                .map_err(|e| ThumbnailError::Corrupt(e.to_string()))?;
            let (w, h) = decoder.dimensions();
            limits.check(w, h)?;
            decoder.total_bytes()
        }
    };
    Ok(produced + produced / 10)
}

/// Pixels on their way to a thumbnail.
struct Decoded {
    image: DynamicImage,
    orientation: Orientation,
    /// The stored (unrotated) size of the source.
    source: (u32, u32),
}

enum Fallback {
    /// A JPEG feature `jpeg-decoder` lacks (arithmetic coding, say): try `image`.
    Unsupported,
    Failed(ThumbnailError),
}

impl From<ThumbnailError> for Fallback {
    fn from(error: ThumbnailError) -> Self {
        Fallback::Failed(error)
    }
}

/// A JPEG decoded at the smallest DCT scale (1/1, 1/2, 1/4, 1/8) that still covers the
/// thumbnail.
fn decode_jpeg_scaled(
    bytes: &[u8],
    limits: &ImageLimits,
    max_side: u32,
) -> Result<Decoded, Fallback> {
    use jpeg_decoder::{CodingProcess, Decoder, Error, PixelFormat};
    let failed = |e: Error| match e {
        Error::Unsupported(_) => Fallback::Unsupported,
        Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Fallback::Failed(
            ThumbnailError::Corrupt("the data ends before the image does".into()),
        ),
        other => Fallback::Failed(ThumbnailError::Corrupt(other.to_string())),
    };
    let mut decoder = Decoder::new(bytes);
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    decoder.read_info().map_err(failed)?;
    let info = decoder
        .info()
        .ok_or_else(|| ThumbnailError::Corrupt("no frame header".into()))?;
    let source = (u32::from(info.width), u32::from(info.height));
    limits.check(source.0, source.1)?;
    // A progressive JPEG keeps every coefficient (2 bytes each) until its last scan.
    let components: u64 = match info.pixel_format {
        PixelFormat::L8 | PixelFormat::L16 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::CMYK32 => 4,
    };
    if info.coding_process == CodingProcess::DctProgressive
        && u64::from(info.width) * u64::from(info.height) * components * 2 > limits.max_alloc
    {
        return Err(ThumbnailError::TooMuchMemory {
            limit_mib: limits.max_alloc >> 20,
        }
        .into());
    }
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let (want_w, want_h) = fit(source, max_side);
    // At 1/8 scale (jpeg-decoder's choice rule: either side covers the target), the
    // common baseline layouts take the DC-only path; the rest fall through.
    let eighth = source.0.div_ceil(8) >= want_w || source.1.div_ceil(8) >= want_h;
    if eighth
        && info.coding_process == CodingProcess::DctSequential
        && matches!(info.pixel_format, PixelFormat::L8 | PixelFormat::RGB24)
    {
        match jpeg_dc::decode_eighth(bytes) {
            Ok(small) => {
                let (w, h, pixels) = (small.width, small.height, small.pixels);
                let corrupt =
                    || ThumbnailError::Corrupt("the decoded pixels do not match the header".into());
                let image = if small.gray {
                    DynamicImage::ImageLuma8(
                        image::GrayImage::from_raw(w, h, pixels).ok_or_else(corrupt)?,
                    )
                } else {
                    DynamicImage::ImageRgb8(
                        image::RgbImage::from_raw(w, h, pixels).ok_or_else(corrupt)?,
                    )
                };
                return Ok(Decoded {
                    image,
                    orientation,
                    source,
                });
            }
            Err(DcError::Corrupt(why)) => return Err(ThumbnailError::Corrupt(why).into()),
            Err(DcError::Unsupported) => {}
        }
    }
    let to_u16 = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
    decoder
        .scale(to_u16(want_w), to_u16(want_h))
        .map_err(failed)?;
    let pixels = decoder.decode().map_err(failed)?;
    let info = decoder
        .info()
        .ok_or_else(|| ThumbnailError::Corrupt("no frame header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let corrupt = || ThumbnailError::Corrupt("the decoded pixels do not match the header".into());
    let image = match info.pixel_format {
        PixelFormat::L8 => {
            DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, pixels).ok_or_else(corrupt)?)
        }
        PixelFormat::L16 => {
            let samples = pixels
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            DynamicImage::ImageLuma16(
                image::ImageBuffer::from_raw(w, h, samples).ok_or_else(corrupt)?,
            )
        }
        PixelFormat::RGB24 => {
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, pixels).ok_or_else(corrupt)?)
        }
        PixelFormat::CMYK32 => {
            // Adobe writes CMYK inverted (as jpeg-decoder returns it): 255 is no ink.
            let rgb = pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [p[0], p[1], p[2]].map(|c| (u16::from(c) * k / 255) as u8)
                })
                .collect();
            DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, rgb).ok_or_else(corrupt)?)
        }
    };
    Ok(Decoded {
        image,
        orientation,
        source,
    })
}

/// Any supported format through `image`, with the limits set before the pixels are read.
fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    limits: &ImageLimits,
) -> Result<Decoded, ThumbnailError> {
    let decoding = |e: image::ImageError| match e {
        image::ImageError::Limits(_) => ThumbnailError::TooMuchMemory {
            limit_mib: limits.max_alloc >> 20,
        },
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ThumbnailError::Corrupt("the data ends before the image does".into())
        }
        other => ThumbnailError::Corrupt(other.to_string()),
    };
    // Only the memory ceiling while the header is read: the dimensions get our own check
    // (with a clearer message) before the decoder's.
    let mut header_limits = image::Limits::default();
    header_limits.max_alloc = Some(limits.max_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(header_limits);
    let mut decoder = reader.into_decoder().map_err(decoding)?;
    let source = decoder.dimensions();
    limits.check(source.0, source.1)?;
    decoder
        .set_limits(limits.decoder_limits())
        .map_err(decoding)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(decoding)?;
    Ok(Decoded {
        image,
        orientation,
        source,
    })
}

/// The size that fits `source` in a `max_side` square, keeping its aspect ratio; never
/// larger than the source, never zero.
fn fit((width, height): (u32, u32), max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = |side: u32| {
        ((u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest))
            as u32
    };
    (scale(width).max(1), scale(height).max(1))
}

/// Resample to the thumbnail's size, turn it the way EXIF says, encode.
fn finish(decoded: Decoded, max_side: u32) -> Result<Thumbnail, ThumbnailError> {
    let Decoded {
        image,
        orientation,
        source,
    } = decoded;
    let (w, h) = fit(source, max_side);
    let (iw, ih) = (image.width(), image.height());
    let mut small = if (iw, ih) == (w, h) {
        image
    } else if iw >= 2 * w && ih >= 2 * h {
        // Far from the target (a whole-size decode): area averaging, fast and alias-free.
        image.thumbnail_exact(w, h)
    } else {
        // Within 2× (after a DCT-scaled decode): a real filter for the last step.
        image.resize_exact(w, h, FilterType::CatmullRom)
    };
    small.apply_orientation(orientation);
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (source_width, source_height) = if swaps { (source.1, source.0) } else { source };
    let (width, height) = (small.width(), small.height());
    let mut bytes = Vec::new();
    let (mime, extension) = if has_transparency(&small) {
        let rgba = small.to_rgba8();
        rgba.write_with_encoder(PngEncoder::new(&mut bytes))
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        ("image/png", "png")
    } else {
        let encoder = JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY);
        let result = match small {
            DynamicImage::ImageLuma8(gray) => gray.write_with_encoder(encoder),
            other => other.to_rgb8().write_with_encoder(encoder),
        };
        result.map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        ("image/jpeg", "jpg")
    };
    Ok(Thumbnail {
        bytes,
        mime,
        extension,
        width,
        height,
        source_width,
        source_height,
    })
}

/// Whether any pixel is not fully opaque (a GIF or PNG may carry an alpha channel that
/// is opaque everywhere: that still makes a JPEG).
fn has_transparency(image: &DynamicImage) -> bool {
    match image {
        DynamicImage::ImageLumaA8(i) => i.pixels().any(|p| p[1] < u8::MAX),
        DynamicImage::ImageRgba8(i) => i.pixels().any(|p| p[3] < u8::MAX),
        DynamicImage::ImageLumaA16(i) => i.pixels().any(|p| p[1] < u16::MAX),
        DynamicImage::ImageRgba16(i) => i.pixels().any(|p| p[3] < u16::MAX),
        DynamicImage::ImageRgba32F(i) => i.pixels().any(|p| p[3] < 1.0),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    use super::*;

    /// A photo-like picture: gradients, a red block top-left, some noise.
    fn picture(width: u32, height: u32) -> RgbImage {
        let mut noise = 0x2545_F491u32;
        RgbImage::from_fn(width, height, |x, y| {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            if x < width / 4 && y < height / 4 {
                return Rgb([230, 20, 20]);
            }
            let n = (noise % 17) as u8;
            Rgb([
                (x * 200 / width) as u8 + n,
                (y * 200 / height) as u8 + n,
                90 + n,
            ])
        })
    }

    fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).expect("encode");
        bytes.into_inner()
    }

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        encode(
            &DynamicImage::ImageRgb8(picture(width, height)),
            ImageFormat::Jpeg,
        )
    }

    fn decode(thumb: &Thumbnail) -> DynamicImage {
        let format = if thumb.mime == "image/png" {
            ImageFormat::Png
        } else {
            ImageFormat::Jpeg
        };
        image::load_from_memory_with_format(&thumb.bytes, format).expect("the thumbnail decodes")
    }

    fn close(a: Rgb<u8>, b: [u8; 3], tolerance: i32) -> bool {
        a.0.iter()
            .zip(b)
            .all(|(x, y)| (i32::from(*x) - i32::from(y)).abs() <= tolerance)
    }

    fn make(bytes: &[u8], sniffed: Sniffed) -> Result<Thumbnail, ThumbnailError> {
        thumbnail(bytes, &sniffed, &ImageLimits::default(), DEFAULT_MAX_SIDE)
    }

    #[test]
    fn every_image_format_gives_a_jpeg_of_the_right_size_and_picture() {
        let source = DynamicImage::ImageRgb8(picture(640, 480));
        let cases = [
            (ImageFormat::Jpeg, sniff::JPEG),
            (ImageFormat::Png, sniff::PNG),
            (ImageFormat::Gif, sniff::GIF),
            (ImageFormat::WebP, sniff::WEBP),
            (ImageFormat::Bmp, sniff::BMP),
            (ImageFormat::Tiff, sniff::TIFF),
        ];
        for (format, sniffed) in cases {
            let bytes = encode(&source, format);
            assert_eq!(
                sniff::sniff(&bytes, "upload").expect("sniffs"),
                sniffed,
                "{format:?}"
            );
            let thumb = make(&bytes, sniffed).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(
                (thumb.mime, thumb.extension),
                ("image/jpeg", "jpg"),
                "{format:?}"
            );
            assert_eq!((thumb.width, thumb.height), (256, 192), "{format:?}");
            assert_eq!(
                (thumb.source_width, thumb.source_height),
                (640, 480),
                "{format:?}"
            );
            let pixels = decode(&thumb).to_rgb8();
            assert_eq!(pixels.dimensions(), (256, 192));
            // The red block is still top-left, the gradient still runs dark to light.
            assert!(
                close(*pixels.get_pixel(20, 20), [230, 20, 20], 40),
                "{format:?}: {:?}",
                pixels.get_pixel(20, 20)
            );
            let left = pixels.get_pixel(70, 150)[0];
            let right = pixels.get_pixel(250, 150)[0];
            assert!(right > left + 100, "{format:?}: {left} → {right}");
        }
    }

    #[test]
    fn transparency_makes_a_png_and_an_opaque_alpha_channel_does_not() {
        let see_through = RgbaImage::from_fn(300, 100, |x, _| {
            Rgba([0, 0, 255, if x < 150 { 0 } else { 255 }])
        });
        let bytes = encode(&DynamicImage::ImageRgba8(see_through), ImageFormat::Png);
        let thumb = make(&bytes, sniff::PNG).expect("thumbnail");
        assert_eq!(
            (thumb.mime, thumb.extension, thumb.width, thumb.height),
            ("image/png", "png", 256, 85)
        );
        let pixels = decode(&thumb).to_rgba8();
        assert_eq!(pixels.get_pixel(10, 40)[3], 0);
        assert_eq!(pixels.get_pixel(250, 40).0, [0, 0, 255, 255]);

        let opaque = RgbaImage::from_pixel(300, 100, Rgba([10, 200, 10, 255]));
        let thumb = make(
            &encode(&DynamicImage::ImageRgba8(opaque), ImageFormat::Png),
            sniff::PNG,
        )
        .expect("thumbnail");
        assert_eq!(thumb.mime, "image/jpeg");
    }

    #[test]
    fn a_gif_gives_its_first_frame() {
        use image::{Delay, Frame, codecs::gif::GifEncoder};
        let mut bytes = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut bytes);
            for colour in [[250, 250, 0, 255], [0, 0, 250, 255]] {
                let frame = Frame::from_parts(
                    RgbaImage::from_pixel(400, 300, Rgba(colour)),
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                );
                encoder.encode_frame(frame).expect("frame");
            }
        }
        let thumb = make(&bytes, sniff::GIF).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 192));
        let pixel = *decode(&thumb).to_rgb8().get_pixel(128, 96);
        assert!(close(pixel, [250, 250, 0], 12), "{pixel:?}");
    }

    #[test]
    fn small_images_keep_their_size_and_max_side_is_configurable() {
        let thumb = make(&jpeg(100, 50), sniff::JPEG).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (100, 50));
        let thumb = thumbnail(&jpeg(640, 480), &sniff::JPEG, &ImageLimits::default(), 64)
            .expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (64, 48));
        let tall = thumbnail(&jpeg(300, 3000), &sniff::JPEG, &ImageLimits::default(), 256)
            .expect("thumbnail");
        assert_eq!((tall.width, tall.height), (26, 256));
        let line = thumbnail(&jpeg(4000, 8), &sniff::JPEG, &ImageLimits::default(), 256)
            .expect("thumbnail");
        assert_eq!((line.width, line.height), (256, 1));
    }

    #[test]
    fn a_large_jpeg_is_decoded_at_reduced_scale() {
        let bytes = jpeg(2048, 1536);
        let Ok(decoded) = decode_jpeg_scaled(&bytes, &ImageLimits::default(), 256) else {
            panic!("decodes");
        };
        assert_eq!(decoded.source, (2048, 1536));
        assert_eq!(
            (decoded.image.width(), decoded.image.height()),
            (256, 192),
            "1/8 scale"
        );
        let Ok(decoded) = decode_jpeg_scaled(&bytes, &ImageLimits::default(), 600) else {
            panic!("decodes");
        };
        assert_eq!(
            (decoded.image.width(), decoded.image.height()),
            (1024, 768),
            "1/2 scale"
        );
        let thumb = make(&bytes, sniff::JPEG).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 192));
        assert!(close(
            *decode(&thumb).to_rgb8().get_pixel(30, 30),
            [230, 20, 20],
            40
        ));
    }

    /// Puts an APP1 EXIF segment with one IFD entry, Orientation = `value`, after SOI.
    fn with_orientation(jpeg: &[u8], value: u16) -> Vec<u8> {
        let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&value.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]);
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut segment = vec![0xFF, 0xE1];
        segment.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
        segment.extend_from_slice(b"Exif\0\0");
        segment.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&segment);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 600 × 400 stored, red block top-left.
        let stored = jpeg(600, 400);
        // 6: shown turned 90° clockwise: 400 × 600, the red block top-right.
        let thumb = make(&with_orientation(&stored, 6), sniff::JPEG).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (171, 256));
        assert_eq!((thumb.source_width, thumb.source_height), (400, 600));
        let pixels = decode(&thumb).to_rgb8();
        assert!(
            close(*pixels.get_pixel(160, 15), [230, 20, 20], 40),
            "{:?}",
            pixels.get_pixel(160, 15)
        );
        assert!(!close(*pixels.get_pixel(10, 15), [230, 20, 20], 60));
        // 3: upside down: the red block bottom-right.
        let thumb = make(&with_orientation(&stored, 3), sniff::JPEG).expect("thumbnail");
        assert_eq!((thumb.width, thumb.height), (256, 171));
        let pixels = decode(&thumb).to_rgb8();
        assert!(
            close(*pixels.get_pixel(245, 160), [230, 20, 20], 40),
            "{:?}",
            pixels.get_pixel(245, 160)
        );
        // 1 (and no EXIF at all): as stored.
        let thumb = make(&with_orientation(&stored, 1), sniff::JPEG).expect("thumbnail");
        assert!(close(
            *decode(&thumb).to_rgb8().get_pixel(10, 10),
            [230, 20, 20],
            40
        ));
    }

    #[test]
    fn a_truncated_jpeg_fails_with_a_reason() {
        let whole = jpeg(800, 600);
        for keep in [whole.len() * 6 / 10, whole.len() / 4, 400, 20, 3] {
            let error = make(&whole[..keep], sniff::JPEG).expect_err("truncated");
            assert!(
                matches!(error, ThumbnailError::Corrupt(_)),
                "{keep}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("the image is corrupt or truncated"),
                "{error}"
            );
        }
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A PNG whose IHDR (with a valid CRC) declares `width` × `height`, 8-bit RGB, and
    /// a tiny IDAT that could never fill it.
    fn png_declaring(width: u32, height: u32) -> Vec<u8> {
        let chunk = |kind: &[u8; 4], data: &[u8]| {
            let mut out = (data.len() as u32).to_be_bytes().to_vec();
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
            out
        };
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    #[test]
    fn the_decode_cost_is_read_from_the_header() {
        let limits = ImageLimits::default();
        // 100 megapixels of 8-bit RGB: 300 MB of pixels, and a tenth for the resizing.
        let png = png_declaring(10_000, 10_000);
        assert_eq!(
            decode_cost(&png, &sniff::PNG, &limits, 256).unwrap(),
            330_000_000
        );
        // A baseline JPEG is decoded at 1/8 scale when that still covers the thumbnail.
        let photo = jpeg(4000, 3000);
        let cost = decode_cost(&photo, &sniff::JPEG, &limits, 256).unwrap();
        assert_eq!(cost, 500 * 375 * 3 + 500 * 375 * 3 / 10);
        // Small ones at full size.
        let small = jpeg(300, 200);
        assert_eq!(
            decode_cost(&small, &sniff::JPEG, &limits, 256).unwrap(),
            300 * 200 * 3 + 300 * 200 * 3 / 10
        );
        assert!(decode_cost(&png_declaring(50_000, 50_000), &sniff::PNG, &limits, 256).is_err());
    }

    #[test]
    fn the_crc_helper_is_right() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082); // every PNG ends with it
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        let bomb = png_declaring(50_000, 50_000);
        assert_eq!(sniff::sniff(&bomb, "bomb.png"), Ok(sniff::PNG));
        let error = make(&bomb, sniff::PNG).expect_err("bomb");
        assert_eq!(
            error,
            ThumbnailError::TooLarge {
                width: 50_000,
                height: 50_000,
                limit: "30000 pixels wide".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "the image is 50000 × 50000 pixels, over the limit of 30000 pixels wide"
        );
        // Within the side limits, over the pixel count.
        let error = make(&png_declaring(20_000, 20_000), sniff::PNG).expect_err("bomb");
        assert!(
            matches!(&error, ThumbnailError::TooLarge { limit, .. } if limit == "100 megapixels"),
            "{error:?}"
        );
        // Tighter limits come from the caller.
        let tight = ImageLimits {
            max_width: 500,
            max_height: 500,
            max_pixels: 100_000,
            max_alloc: 1 << 20,
        };
        let error = thumbnail(&jpeg(640, 480), &sniff::JPEG, &tight, 256).expect_err("too wide");
        assert!(matches!(
            error,
            ThumbnailError::TooLarge {
                width: 640,
                height: 480,
                ..
            }
        ));
        let error =
            thumbnail(&jpeg(400, 400), &sniff::JPEG, &tight, 256).expect_err("too many pixels");
        assert!(matches!(
            error,
            ThumbnailError::TooLarge {
                width: 400,
                height: 400,
                ..
            }
        ));
    }

    #[test]
    fn a_jpeg_header_declaring_a_huge_image_is_refused_before_decoding() {
        let mut bytes = jpeg(64, 64);
        let sof = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline SOF");
        bytes[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes()); // height
        bytes[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes()); // width
        let error = make(&bytes, sniff::JPEG).expect_err("bomb");
        assert!(
            matches!(
                error,
                ThumbnailError::TooLarge {
                    width: 60_000,
                    height: 60_000,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_png_with_a_small_declared_size_but_broken_data_fails() {
        let error = make(&png_declaring(64, 64), sniff::PNG).expect_err("no pixels");
        assert!(matches!(error, ThumbnailError::Corrupt(_)), "{error:?}");
    }

    #[test]
    fn garbage_and_corrupt_headers_fail_with_a_reason() {
        let mut noise = 0x1234_5678u32;
        let mut garbage: Vec<u8> = (0..5000)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 17;
                noise ^= noise << 5;
                noise as u8
            })
            .collect();
        for (magic, sniffed) in [
            (&[0xFF, 0xD8, 0xFF][..], sniff::JPEG),
            (b"\x89PNG\r\n\x1a\n", sniff::PNG),
            (b"GIF89a", sniff::GIF),
            (b"RIFF\0\0\0\0WEBP", sniff::WEBP),
            (b"BM", sniff::BMP),
            (b"II*\0", sniff::TIFF),
        ] {
            garbage[..magic.len()].copy_from_slice(magic);
            let error = make(&garbage, sniffed).expect_err("garbage");
            assert!(
                matches!(
                    error,
                    ThumbnailError::Corrupt(_) | ThumbnailError::TooLarge { .. }
                ),
                "{}: {error:?}",
                sniffed.mime
            );
            let error = make(magic, sniffed).expect_err("header only");
            assert!(
                matches!(error, ThumbnailError::Corrupt(_)),
                "{}: {error:?}",
                sniffed.mime
            );
        }
        // A PNG whose IHDR CRC is wrong.
        let mut bad_crc = png_declaring(64, 64);
        bad_crc[29] ^= 0xFF;
        assert!(matches!(
            make(&bad_crc, sniff::PNG),
            Err(ThumbnailError::Corrupt(_))
        ));
    }

    #[test]
    fn a_truncated_file_of_any_format_fails_cleanly() {
        let source = DynamicImage::ImageRgb8(picture(320, 240));
        for (format, sniffed) in [
            (ImageFormat::Jpeg, sniff::JPEG),
            (ImageFormat::Png, sniff::PNG),
            (ImageFormat::Gif, sniff::GIF),
            (ImageFormat::WebP, sniff::WEBP),
            (ImageFormat::Bmp, sniff::BMP),
            (ImageFormat::Tiff, sniff::TIFF),
        ] {
            let whole = encode(&source, format);
            for tenth in 1..10 {
                let cut = &whole[..whole.len() * tenth / 10];
                let error = make(cut, sniffed).expect_err("truncated");
                assert!(
                    matches!(error, ThumbnailError::Corrupt(_)),
                    "{format:?} at {tenth}/10: {error:?}"
                );
                // A decoder panic is caught, but would be a bug worth knowing about.
                assert!(
                    !error.to_string().contains("the decoder failed"),
                    "{format:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn only_images_are_thumbnailed() {
        let error = make(b"%PDF-1.7", sniff::PDF).expect_err("a document");
        assert_eq!(
            error,
            ThumbnailError::NotAnImage {
                mime: "application/pdf"
            }
        );
        assert_eq!(
            error.to_string(),
            "application/pdf is not an image we make thumbnails of"
        );
    }

    #[test]
    fn fitting_keeps_the_aspect_ratio() {
        assert_eq!(fit((4000, 3000), 256), (256, 192));
        assert_eq!(fit((3000, 4000), 256), (192, 256));
        assert_eq!(fit((256, 100), 256), (256, 100));
        assert_eq!(fit((10_000, 1), 256), (256, 1));
        assert_eq!(fit((1, 1), 256), (1, 1));
    }
}
