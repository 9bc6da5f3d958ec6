//! What an upload is, told by its first bytes: never by its name or the client's
//! `Content-Type`, which anyone can set to anything.
//!
//! [`sniff`] reads the first [`SNIFF_BYTES`] of a file and answers one of the allowed
//! types ([`ALLOWED`], in four [`Category`]s) or a [`Refusal`] whose message can be
//! shown to the uploader as it is. The name is only checked against the contents:
//!
//! - executables (ELF, PE/MZ, Mach-O, `#!` scripts, WebAssembly, Java/Android packages,
//!   Windows Installer) are refused whatever they are called, and so is any content
//!   whose name ends in an executable extension (`.exe`, `.bat`, `.sh`, …): its display
//!   name is kept, and a download would carry it;
//! - archives not in the list (ZIP, RAR, 7z, gzip, tar, …), known but unlisted types
//!   (HEIC, SVG, HTML, FLAC, Matroska, …) and unrecognised bytes are refused;
//! - a name whose extension claims another type of the *same* category (`photo.jpg`
//!   that is a PNG) is tolerated and the stored type is the sniffed one; a name that
//!   claims another category (`invoice.pdf` that is an MP4) is refused, naming both.
//!   Unknown extensions (`.dat`) claim nothing.
//!
//! The file name that is shown is [`safe_display_name`]; the name the bytes are stored
//! under is [`stored_name`], made of a timestamp and a random id, never of user input.
//!
//! Everything here is pure and cheap (a few table look-ups and a scan of at most
//! [`SNIFF_BYTES`]): the api runs it on the request path and the worker again on the
//! stored bytes.

use std::fmt;

/// How many bytes from the start of a file [`sniff`] wants. Fewer is fine when the file
/// is shorter. 8 KiB reaches past a tar header (offset 257), several ZIP local headers
/// (to see `word/`, `xl/`, `ppt/` in an Office document) and the track list of a WebM.
pub const SNIFF_BYTES: usize = 8192;

/// The four families of accepted files, as the portal groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Images,
    Documents,
    Videos,
    Audio,
}

impl Category {
    /// The name stored in the database and sent to clients (`file_category`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Images => "images",
            Category::Documents => "documents",
            Category::Videos => "videos",
            Category::Audio => "audio",
        }
    }

    /// The inverse of [`Category::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            Category::Images,
            Category::Documents,
            Category::Videos,
            Category::Audio,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }

    /// For messages: "the name says .pdf (a document)".
    const fn noun(self) -> &'static str {
        match self {
            Category::Images => "an image",
            Category::Documents => "a document",
            Category::Videos => "a video",
            Category::Audio => "audio",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An allowed type, as told by the contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sniffed {
    /// The `Content-Type` the bytes are served with.
    pub mime: &'static str,
    /// The extension of the stored name (no dot).
    pub extension: &'static str,
    pub category: Category,
}

impl Sniffed {
    const fn new(mime: &'static str, extension: &'static str, category: Category) -> Self {
        Sniffed {
            mime,
            extension,
            category,
        }
    }

    /// Whether the workers make a thumbnail of it.
    pub fn is_image(&self) -> bool {
        self.category == Category::Images
    }
}

pub const JPEG: Sniffed = Sniffed::new("image/jpeg", "jpg", Category::Images);
pub const PNG: Sniffed = Sniffed::new("image/png", "png", Category::Images);
pub const GIF: Sniffed = Sniffed::new("image/gif", "gif", Category::Images);
pub const WEBP: Sniffed = Sniffed::new("image/webp", "webp", Category::Images);
pub const BMP: Sniffed = Sniffed::new("image/bmp", "bmp", Category::Images);
pub const TIFF: Sniffed = Sniffed::new("image/tiff", "tif", Category::Images);

pub const PDF: Sniffed = Sniffed::new("application/pdf", "pdf", Category::Documents);
pub const TEXT: Sniffed = Sniffed::new("text/plain", "txt", Category::Documents);
pub const CSV: Sniffed = Sniffed::new("text/csv", "csv", Category::Documents);
pub const RTF: Sniffed = Sniffed::new("application/rtf", "rtf", Category::Documents);
pub const DOC: Sniffed = Sniffed::new("application/msword", "doc", Category::Documents);
pub const XLS: Sniffed = Sniffed::new("application/vnd.ms-excel", "xls", Category::Documents);
pub const PPT: Sniffed = Sniffed::new("application/vnd.ms-powerpoint", "ppt", Category::Documents);
pub const DOCX: Sniffed = Sniffed::new(
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "docx",
    Category::Documents,
);
pub const XLSX: Sniffed = Sniffed::new(
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xlsx",
    Category::Documents,
);
pub const PPTX: Sniffed = Sniffed::new(
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "pptx",
    Category::Documents,
);

pub const MP4: Sniffed = Sniffed::new("video/mp4", "mp4", Category::Videos);
pub const MOV: Sniffed = Sniffed::new("video/quicktime", "mov", Category::Videos);
pub const WEBM: Sniffed = Sniffed::new("video/webm", "webm", Category::Videos);
pub const THREE_GP: Sniffed = Sniffed::new("video/3gpp", "3gp", Category::Videos);
pub const THREE_G2: Sniffed = Sniffed::new("video/3gpp2", "3g2", Category::Videos);
pub const AVI: Sniffed = Sniffed::new("video/x-msvideo", "avi", Category::Videos);
pub const MPEG: Sniffed = Sniffed::new("video/mpeg", "mpg", Category::Videos);

pub const MP3: Sniffed = Sniffed::new("audio/mpeg", "mp3", Category::Audio);
pub const WAV: Sniffed = Sniffed::new("audio/wav", "wav", Category::Audio);
pub const OGG: Sniffed = Sniffed::new("audio/ogg", "ogg", Category::Audio);
pub const M4A: Sniffed = Sniffed::new("audio/mp4", "m4a", Category::Audio);
pub const AAC: Sniffed = Sniffed::new("audio/aac", "aac", Category::Audio);
pub const WEBM_AUDIO: Sniffed = Sniffed::new("audio/webm", "webm", Category::Audio);

/// Every type [`sniff`] can answer.
pub const ALLOWED: &[Sniffed] = &[
    JPEG, PNG, GIF, WEBP, BMP, TIFF, PDF, TEXT, CSV, RTF, DOC, XLS, PPT, DOCX, XLSX, PPTX, MP4,
    MOV, WEBM, THREE_GP, THREE_G2, AVI, MPEG, MP3, WAV, OGG, M4A, AAC, WEBM_AUDIO,
];

/// Said in refusals, so the uploader knows what would pass.
const ACCEPTED: &str = "accepted are images (JPEG, PNG, GIF, WebP, BMP, TIFF), documents (PDF, text, CSV, \
     Word, Excel, PowerPoint, RTF), videos (MP4, QuickTime, WebM, 3GP, AVI, MPEG) and audio (MP3, WAV, Ogg, \
     M4A, AAC, WebM)";

/// Why an upload is not accepted. The messages are meant for the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the file is empty")]
    Empty,
    /// The contents are a program, whatever the name says.
    #[error("executables are not accepted: the contents are {kind}{}", declared_suffix(.declared))]
    Executable {
        kind: &'static str,
        /// The extension of the original name, if it had one.
        declared: Option<String>,
    },
    /// The name ends in an extension that runs when opened (`.exe`, `.bat`, `.sh`, …).
    #[error("files named .{extension} are not accepted (an executable type)")]
    ExecutableName { extension: String },
    #[error("archives are not accepted: the contents are {kind}; {ACCEPTED}")]
    Archive { kind: &'static str },
    /// A type we know but do not take.
    #[error("{kind} is not an accepted type; {ACCEPTED}")]
    NotAllowed { kind: &'static str },
    #[error("the type of the contents could not be recognised; {ACCEPTED}")]
    Unknown,
    /// The name claims a type of another category than the contents.
    #[error(
        "the name says .{declared} ({}) but the contents are {} ({})",
        .declared_category.noun(),
        .actual.mime,
        .actual.category.noun()
    )]
    Mismatch {
        declared: String,
        declared_category: Category,
        actual: Sniffed,
    },
}

fn declared_suffix(declared: &Option<String>) -> String {
    match declared {
        Some(ext) => format!(" (the name says .{ext})"),
        None => String::new(),
    }
}

/// Classifies a file by its first bytes (pass up to [`SNIFF_BYTES`]). `original_name`
/// is only compared with what the contents are; see the module doc for the rules.
pub fn sniff(head: &[u8], original_name: &str) -> Result<Sniffed, Refusal> {
    if head.is_empty() {
        return Err(Refusal::Empty);
    }
    let head = &head[..head.len().min(SNIFF_BYTES)];
    let declared = declared_extension(original_name);
    let sniffed = match detect(head, declared.as_deref()) {
        Err(Refusal::Executable { kind, .. }) => {
            return Err(Refusal::Executable { kind, declared });
        }
        other => other?,
    };
    let Some(declared) = declared else {
        return Ok(sniffed);
    };
    if EXECUTABLE_EXTENSIONS.contains(&declared.as_str()) {
        return Err(Refusal::ExecutableName {
            extension: declared,
        });
    }
    match declared_kind(&declared) {
        Some((category, family))
            if category != sniffed.category
                && (family.is_none() || family != family_of(sniffed)) =>
        {
            Err(Refusal::Mismatch {
                declared,
                declared_category: category,
                actual: sniffed,
            })
        }
        _ => Ok(sniffed),
    }
}

/// Types that share a container, where the contents alone cannot always tell audio from
/// video: within one, the name may pick either category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// ISO base media (MP4, M4A, QuickTime, 3GP).
    Bmff,
    /// WebM with or without a video track.
    Webm,
}

fn family_of(sniffed: Sniffed) -> Option<Family> {
    match sniffed {
        MP4 | MOV | THREE_GP | THREE_G2 | M4A => Some(Family::Bmff),
        WEBM | WEBM_AUDIO => Some(Family::Webm),
        _ => None,
    }
}

/// What an extension claims: its category, and the container family if it has one.
fn declared_kind(extension: &str) -> Option<(Category, Option<Family>)> {
    use Category::*;
    Some(match extension {
        "jpg" | "jpeg" | "jpe" | "jfif" | "png" | "gif" | "webp" | "bmp" | "dib" | "tif"
        | "tiff" => (Images, None),
        "pdf" | "txt" | "text" | "csv" | "rtf" | "doc" | "docx" | "xls" | "xlsx" | "ppt"
        | "pptx" => (Documents, None),
        "mp4" | "m4v" | "mov" | "qt" | "3gp" | "3g2" => (Videos, Some(Family::Bmff)),
        "webm" => (Videos, Some(Family::Webm)),
        "avi" | "mpeg" | "mpg" | "mpe" => (Videos, None),
        "m4a" => (Audio, Some(Family::Bmff)),
        "weba" => (Audio, Some(Family::Webm)),
        "mp3" | "wav" | "wave" | "ogg" | "oga" | "opus" | "aac" => (Audio, None),
        _ => return None,
    })
}

/// Names that run when opened (or installed) on a common system.
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe", "dll", "com", "scr", "pif", "cpl", "msi", "msp", "mst", "bat", "cmd", "ps1", "psm1",
    "vbs", "vbe", "js", "jse", "mjs", "wsf", "wsh", "hta", "lnk", "reg", "jar", "apk", "app", "sh",
    "bash", "zsh", "csh", "ksh", "command", "run", "elf", "so", "dylib", "deb", "rpm", "dmg",
    "pkg", "py", "pl", "rb", "php",
];

/// The lowercase extension of the last path component, if it looks like one.
fn declared_extension(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (stem, ext) = last.trim_end_matches([' ', '.']).rsplit_once('.')?;
    let ok = !stem.is_empty()
        && (1..=10).contains(&ext.len())
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| ext.to_ascii_lowercase())
}

/// The contents alone (and, within a container family, the declared extension).
fn detect(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    let starts = |signature: &[u8]| head.starts_with(signature);
    let at = |offset: usize, signature: &[u8]| {
        head.get(offset..offset + signature.len()) == Some(signature)
    };
    let executable = |kind| {
        Err(Refusal::Executable {
            kind,
            declared: None,
        })
    };
    let archive = |kind| Err(Refusal::Archive { kind });
    let not_allowed = |kind| Err(Refusal::NotAllowed { kind });

    // Programs first: nothing below may take them for something else.
    if starts(b"\x7fELF") {
        return executable("an ELF executable");
    }
    if starts(b"MZ") {
        return executable("a Windows executable (MZ/PE)");
    }
    if starts(&[0xFE, 0xED, 0xFA, 0xCE])
        || starts(&[0xFE, 0xED, 0xFA, 0xCF])
        || starts(&[0xCE, 0xFA, 0xED, 0xFE])
        || starts(&[0xCF, 0xFA, 0xED, 0xFE])
    {
        return executable("a Mach-O executable");
    }
    if starts(&[0xCA, 0xFE, 0xBA, 0xBE]) {
        return executable("a Mach-O universal binary or Java class");
    }
    if starts(b"\0asm") {
        return executable("a WebAssembly module");
    }
    if starts(b"dex\n") {
        return executable("an Android DEX file");
    }
    if starts(b"#!") || starts(b"\xEF\xBB\xBF#!") {
        return executable("a script (#!)");
    }

    // Images.
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(JPEG);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(PNG);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(GIF);
    }
    if starts(b"RIFF") && head.len() >= 12 {
        return match &head[8..12] {
            b"WEBP" => Ok(WEBP),
            b"WAVE" => Ok(WAV),
            b"AVI " => Ok(AVI),
            _ => Err(Refusal::Unknown),
        };
    }
    if starts(b"BM") && is_bmp(head) {
        return Ok(BMP);
    }
    if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        return Ok(TIFF);
    }

    // Documents.
    if starts(b"%PDF-") {
        return Ok(PDF);
    }
    if starts(b"{\\rtf") {
        return Ok(RTF);
    }
    if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return ole(head, declared);
    }
    if starts(b"PK\x03\x04") {
        return zip(head, declared);
    }
    if starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
        return archive("a ZIP archive");
    }

    // Videos and audio.
    if at(4, b"ftyp") && head.len() >= 12 {
        return bmff(head, declared);
    }
    if [b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"]
        .iter()
        .any(|atom| at(4, *atom))
    {
        return Ok(MOV); // QuickTime before ftyp existed.
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return ebml(head, declared);
    }
    if starts(b"OggS") {
        return Ok(OGG);
    }
    if starts(&[0, 0, 1, 0xBA]) || starts(&[0, 0, 1, 0xB3]) {
        return Ok(MPEG);
    }
    if starts(b"ID3") && head.len() >= 10 && (2..=4).contains(&head[3]) {
        return Ok(MP3);
    }
    if starts(b"\xFF\xFE") || starts(b"\xFE\xFF") {
        return text(head, declared); // UTF-16, before the MPEG audio sync below.
    }
    // One frame header, and the next where the head reaches it.
    if let Some(length) = adts_frame(head)
        && (head.len() < length + 7 || adts_frame(&head[length..]).is_some())
    {
        return Ok(AAC);
    }
    if let Some(length) = mpeg_audio_frame(head)
        && (head.len() < length + 4 || mpeg_audio_frame(&head[length..]).is_some())
    {
        return Ok(MP3);
    }

    // Known, and refused.
    if starts(b"Rar!\x1a\x07") {
        return archive("a RAR archive");
    }
    if starts(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C]) {
        return archive("a 7-Zip archive");
    }
    if starts(&[0x1F, 0x8B]) {
        return archive("a gzip archive");
    }
    if starts(b"BZh") && head.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        return archive("a bzip2 archive");
    }
    if starts(&[0xFD, b'7', b'z', b'X', b'Z', 0]) {
        return archive("an xz archive");
    }
    if starts(&[0x28, 0xB5, 0x2F, 0xFD]) {
        return archive("a Zstandard archive");
    }
    if starts(&[0x04, 0x22, 0x4D, 0x18]) {
        return archive("an LZ4 archive");
    }
    if at(257, b"ustar") {
        return archive("a tar archive");
    }
    if starts(b"MSCF") {
        return archive("a Windows cabinet archive");
    }
    if starts(b"!<arch>\n") {
        return archive("an ar archive (or Debian package)");
    }
    if starts(b"fLaC") {
        return not_allowed("FLAC audio");
    }
    if starts(b"MThd") {
        return not_allowed("MIDI");
    }
    if starts(b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        return not_allowed("AIFF audio");
    }
    if starts(b"8BPS") {
        return not_allowed("a Photoshop document");
    }
    if starts(&[0xFF, 0x0A]) || starts(b"\0\0\0\x0cJXL ") {
        return not_allowed("a JPEG XL image");
    }
    if starts(b"\0\0\0\x0cjP  ") {
        return not_allowed("a JPEG 2000 image");
    }
    if starts(&[0, 0, 1, 0]) && head.len() >= 6 && head[4] > 0 && head[5] == 0 {
        return not_allowed("a Windows icon");
    }

    text(head, declared)
}

/// A BMP file header is followed by a DIB header of one of a few known sizes.
fn is_bmp(head: &[u8]) -> bool {
    head.len() >= 18 && [12, 16, 40, 52, 56, 64, 108, 124].contains(&u32_le(head, 14))
}

fn u16_le(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_le(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// An OLE compound file: Word, Excel and PowerPoint 97–2003, but also Windows Installer
/// packages and Outlook messages. Told apart by the root storage's class id and the
/// stream names when the directory is within the head; otherwise by the name.
fn ole(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    if head.len() >= 0x200 {
        let sector_size = 1usize << u16_le(head, 0x1E).clamp(9, 12);
        let first_directory_sector = u32_le(head, 0x30) as usize;
        let root = first_directory_sector
            .saturating_add(1)
            .saturating_mul(sector_size);
        // The root entry's class id (at 0x50 in the entry): {000C108x-0000-0000-C000-000000000046}
        // is an .msi, .msp or .mst.
        if let Some(clsid) = root.checked_add(0x50).and_then(|at| head.get(at..at + 16))
            && matches!(clsid[0], 0x82 | 0x84 | 0x86)
            && clsid[1..4] == [0x10, 0x0C, 0x00]
            && clsid[4..] == [0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46]
        {
            return Err(Refusal::Executable {
                kind: "a Windows Installer package",
                declared: None,
            });
        }
    }
    let utf16 = |name: &str| {
        name.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>()
    };
    if contains(head, &utf16("WordDocument")) {
        return Ok(DOC);
    }
    if contains(head, &utf16("Workbook")) || contains(head, &utf16("Book\0")) {
        return Ok(XLS);
    }
    if contains(head, &utf16("PowerPoint Document")) {
        return Ok(PPT);
    }
    match declared {
        Some("doc") => Ok(DOC),
        Some("xls") => Ok(XLS),
        Some("ppt") => Ok(PPT),
        _ => Err(Refusal::NotAllowed {
            kind: "an OLE compound file that is not a Word, Excel or PowerPoint document",
        }),
    }
}

/// A ZIP: an Office Open XML document if its entries say so (they come first in files
/// Office writes), a Java/Android package (refused as a program), else an archive.
fn zip(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    let mut content_types = false;
    let mut office = None;
    let mut at = 0;
    while let Some(found) = head[at..].windows(4).position(|w| w == b"PK\x03\x04") {
        let entry = at + found;
        at = entry + 4;
        if entry + 30 > head.len() {
            break;
        }
        let name_length = u16_le(head, entry + 26) as usize;
        let Some(name) = head.get(entry + 30..entry + 30 + name_length) else {
            break;
        };
        match name {
            b"[Content_Types].xml" => content_types = true,
            b"META-INF/MANIFEST.MF" | b"AndroidManifest.xml" | b"classes.dex" => {
                return Err(Refusal::Executable {
                    kind: "a Java or Android package",
                    declared: None,
                });
            }
            _ if name.starts_with(b"word/") => office = office.or(Some(DOCX)),
            _ if name.starts_with(b"xl/") => office = office.or(Some(XLSX)),
            _ if name.starts_with(b"ppt/") => office = office.or(Some(PPTX)),
            _ => {}
        }
    }
    if let Some(office) = office {
        return Ok(office);
    }
    if content_types {
        return match declared {
            Some("docx") => Ok(DOCX),
            Some("xlsx") => Ok(XLSX),
            Some("pptx") => Ok(PPTX),
            _ => Err(Refusal::NotAllowed {
                kind: "an Office Open XML package other than Word, Excel or PowerPoint",
            }),
        };
    }
    if contains(head, b"application/vnd.oasis.opendocument") {
        return Err(Refusal::NotAllowed {
            kind: "an OpenDocument file",
        });
    }
    if contains(head, b"application/epub+zip") {
        return Err(Refusal::NotAllowed {
            kind: "an EPUB book",
        });
    }
    Err(Refusal::Archive {
        kind: "a ZIP archive",
    })
}

/// ISO base media (`ftyp` box): MP4, M4A, QuickTime, 3GP, and the HEIF/AVIF images we
/// do not take. For a generic brand (`isom`, `mp42`, …) an `.m4a` name picks audio.
fn bmff(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    let box_end =
        (u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize).clamp(12, head.len());
    let major = &head[8..12];
    let compatible = head.get(16..box_end).unwrap_or_default().chunks_exact(4);
    let brands: Vec<&[u8]> = std::iter::once(major).chain(compatible).collect();
    let any = |list: &[&[u8]]| brands.iter().any(|b| list.contains(b));

    if any(&[b"avif", b"avis"]) {
        return Err(Refusal::NotAllowed {
            kind: "an AVIF image",
        });
    }
    if any(&[
        b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
    ]) {
        return Err(Refusal::NotAllowed {
            kind: "a HEIC/HEIF image",
        });
    }
    if major == b"crx " {
        return Err(Refusal::NotAllowed {
            kind: "a Canon raw image",
        });
    }
    let generic = |brand: &[u8]| {
        brand.starts_with(b"iso")
            || brand.starts_with(b"mp4")
            || brand.starts_with(b"mp7")
            || brand.starts_with(b"M4V")
            || brand.starts_with(b"F4V")
            || brand.starts_with(b"F4P")
            || [
                b"avc1", b"dash", b"mmp4", b"MSNV", b"NDAS", b"XAVC", b"f4v ",
            ]
            .iter()
            .any(|g| g[..] == *brand)
    };
    let sniffed = match major {
        b"qt  " => MOV,
        b"3g2a" | b"3g2b" | b"3g2c" => THREE_G2,
        _ if major.starts_with(b"3g") => THREE_GP,
        b"M4A " | b"M4B " | b"M4P " | b"F4A " | b"F4B " => M4A,
        _ if brands.iter().any(|b| generic(b)) => MP4,
        _ => match declared.and_then(declared_kind) {
            Some((_, Some(Family::Bmff))) => MP4,
            _ => return Err(Refusal::Unknown),
        },
    };
    Ok(match (sniffed, declared) {
        (MP4, Some("m4a")) => M4A,
        (other, _) => other,
    })
}

/// EBML: WebM (video, or audio when it only has audio tracks), or Matroska.
fn ebml(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    // The DocType element (0x4282) is in the EBML header, in the first few dozen bytes.
    let header = &head[..head.len().min(64)];
    if contains(header, b"\x42\x82\x84webm") || contains(header, b"\x42\x82\x88matroska") {
        if contains(header, b"matroska") {
            return Err(Refusal::NotAllowed {
                kind: "a Matroska video (.mkv)",
            });
        }
        // Codec ids are plain strings in the track entries, early in the file.
        if [&b"V_VP8"[..], b"V_VP9", b"V_AV1", b"V_MPEG4"]
            .iter()
            .any(|c| contains(head, c))
        {
            return Ok(WEBM);
        }
        if [&b"A_OPUS"[..], b"A_VORBIS"]
            .iter()
            .any(|c| contains(head, c))
            || declared == Some("weba")
        {
            return Ok(WEBM_AUDIO);
        }
        return Ok(WEBM);
    }
    Err(Refusal::Unknown)
}

/// An AAC ADTS frame header: its frame length.
fn adts_frame(h: &[u8]) -> Option<usize> {
    if h.len() < 7 || h[0] != 0xFF || h[1] & 0xF6 != 0xF0 || (h[2] >> 2) & 0x0F >= 13 {
        return None;
    }
    let length =
        ((usize::from(h[3]) & 3) << 11) | (usize::from(h[4]) << 3) | (usize::from(h[5]) >> 5);
    (length >= 7).then_some(length)
}

/// An MPEG audio (layer I–III) frame header: its frame length.
fn mpeg_audio_frame(h: &[u8]) -> Option<usize> {
    if h.len() < 4 || h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: 2, 3: 1
    let layer = (h[1] >> 1) & 3; // 1: III, 2: II, 3: I
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 3);
    let padding = usize::from((h[2] >> 1) & 1);
    if version == 1 || layer == 0 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const KBPS: [[usize; 14]; 5] = [
        [
            32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
        ], // 1, I
        [
            32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
        ], // 1, II
        [
            32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ], // 1, III
        [
            32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
        ], // 2, I
        [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160], // 2, II and III
    ];
    const RATES: [[usize; 3]; 3] = [
        [11025, 12000, 8000],
        [22050, 24000, 16000],
        [44100, 48000, 32000],
    ];
    let v1 = version == 3;
    let table = match (v1, layer) {
        (true, 3) => 0,
        (true, 2) => 1,
        (true, _) => 2,
        (false, 3) => 3,
        (false, _) => 4,
    };
    let bitrate = KBPS[table][bitrate_index - 1] * 1000;
    let rate = RATES[if v1 { 2 } else { usize::from(version == 2) }][rate_index];
    Some(match layer {
        3 => (12 * bitrate / rate + padding) * 4,
        1 if !v1 => 72 * bitrate / rate + padding,
        _ => 144 * bitrate / rate + padding,
    })
}

/// Plain text (UTF-8, or UTF-16 with a byte order mark), as text or CSV by the name.
/// HTML, SVG, XML and PostScript are text too, but active content: refused.
fn text(head: &[u8], declared: Option<&str>) -> Result<Sniffed, Refusal> {
    let decoded: String = if let Some(rest) = head.strip_prefix(b"\xFF\xFE") {
        decode_utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = head.strip_prefix(b"\xFE\xFF") {
        decode_utf16(rest, u16::from_be_bytes)?
    } else {
        let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
        match std::str::from_utf8(body) {
            Ok(text) => text.to_owned(),
            // Only a character cut by the end of the head may be incomplete.
            Err(e) if e.error_len().is_none() && body.len() - e.valid_up_to() < 4 => {
                String::from_utf8_lossy(&body[..e.valid_up_to()]).into_owned()
            }
            Err(_) => return Err(Refusal::Unknown),
        }
    };
    if decoded.is_empty() {
        return Err(Refusal::Unknown); // A byte order mark alone.
    }
    let mut odd_controls = 0usize;
    for c in decoded.chars() {
        match c {
            '\0' => return Err(Refusal::Unknown),
            '\t' | '\n' | '\r' | '\x0c' => {}
            c if c.is_control() => odd_controls += 1,
            _ => {}
        }
    }
    if odd_controls * 100 > decoded.len() {
        return Err(Refusal::Unknown);
    }
    let start: String = decoded
        .trim_start()
        .chars()
        .take(256)
        .collect::<String>()
        .to_lowercase();
    let active = |kind| Err(Refusal::NotAllowed { kind });
    if start.starts_with("<svg") || start.starts_with("<!doctype svg") {
        return active("an SVG image");
    }
    if start.starts_with("<?xml") {
        return if start.contains("<svg") {
            active("an SVG image")
        } else {
            active("an XML document")
        };
    }
    if [
        "<!doctype html",
        "<html",
        "<head",
        "<body",
        "<script",
        "<iframe",
    ]
    .iter()
    .any(|p| start.starts_with(p))
    {
        return active("an HTML document");
    }
    if start.starts_with("%!ps") {
        return active("a PostScript document");
    }
    Ok(if declared == Some("csv") { CSV } else { TEXT })
}

fn decode_utf16(bytes: &[u8], read: fn([u8; 2]) -> u16) -> Result<String, Refusal> {
    let units = bytes.chunks_exact(2).map(|pair| read([pair[0], pair[1]]));
    let mut text = String::new();
    let mut chars = char::decode_utf16(units).peekable();
    while let Some(c) = chars.next() {
        match c {
            Ok(c) => text.push(c),
            // An unpaired surrogate is only tolerated where the head was cut.
            Err(_) if chars.peek().is_none() => break,
            Err(_) => return Err(Refusal::Unknown),
        }
    }
    Ok(text)
}

/// The longest display name kept, in bytes of UTF-8.
pub const MAX_DISPLAY_NAME: usize = 200;

/// An original file name made fit to show and to put in a `Content-Disposition`: only
/// its last path component, without control characters (NUL, newlines, …), bidi
/// overrides and invisible format characters, trimmed, at most [`MAX_DISPLAY_NAME`]
/// bytes (keeping the extension), and never empty, `.` or `..` (those become `file`).
/// It is for display only: no file system path or object key is ever made of it.
pub fn safe_display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = last
        .chars()
        // Controls and invisible characters go: `evil\u{202E}gpj.exe` would show as
        // `evilexe.jpg`.
        .filter(|&c| !c.is_control() && !super::text::is_invisible(c))
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim().trim_end_matches(['.', ' ']);
    if trimmed.is_empty() {
        return "file".to_owned();
    }
    if trimmed.len() <= MAX_DISPLAY_NAME {
        return trimmed.to_owned();
    }
    // Too long: cut the stem, keep a short extension.
    let (stem, extension) = match trimmed.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 16 => (stem, Some(ext)),
        _ => (trimmed, None),
    };
    let room = MAX_DISPLAY_NAME - extension.map_or(0, |e| e.len() + 1);
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = stem[..cut].trim_end();
    match extension {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem.to_owned(),
    }
}

/// Where a stored file is downloaded.
pub fn file_url(stored_name: &str) -> String {
    format!("/api/communications/file/{stored_name}")
}

/// Where its thumbnail is downloaded (images only).
pub fn thumbnail_url(stored_name: &str) -> String {
    format!("/api/communications/file/thumbnails/{stored_name}")
}

/// The name an upload is stored under: `yyyymmddthhmmssz-<32 random hex>.<extension>`,
/// all lower case (object keys are).
/// Made of the clock and a random id, never of user input; `extension` is expected to
/// be a [`Sniffed::extension`] (anything but ASCII letters and digits is dropped).
pub fn stored_name(extension: &str) -> String {
    let extension: String = extension
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let time = chrono::Utc::now().format("%Y%m%dt%H%M%Sz");
    let id = uuid::Uuid::new_v4().simple();
    if extension.is_empty() {
        format!("{time}-{id}")
    } else {
        format!("{time}-{id}.{extension}")
    }
}

/// Whether `name` has the shape [`stored_name`] makes, so a download route can refuse
/// anything else before a look-up (and no path trick reaches a store).
pub fn is_stored_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.len() < 49 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    let shape = digits(0..8)
        && bytes[8] == b't'
        && digits(9..15)
        && bytes[15] == b'z'
        && bytes[16] == b'-'
        && bytes[17..49]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let extension_ok = match &bytes[49..] {
        [] => true,
        [b'.', ext @ ..] => {
            (1..=8).contains(&ext.len())
                && ext
                    .iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        }
        _ => false,
    };
    shape && extension_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes starting with `prefix`, the rest filled with a byte no signature uses.
    fn with_prefix(prefix: &[u8], len: usize) -> Vec<u8> {
        let mut bytes = prefix.to_vec();
        bytes.resize(len.max(prefix.len()), 0x5A);
        bytes
    }

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let size = 16 + 4 * compatible.len();
        let mut bytes = (size as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"ftyp");
        bytes.extend_from_slice(major);
        bytes.extend_from_slice(&[0, 0, 2, 0]);
        for brand in compatible {
            bytes.extend_from_slice(*brand);
        }
        bytes.extend_from_slice(&[0, 0, 0, 8]);
        bytes.extend_from_slice(b"mdat");
        bytes
    }

    fn zip_entries(names: &[&str]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for name in names {
            bytes.extend_from_slice(b"PK\x03\x04");
            bytes.extend_from_slice(&[20, 0, 0, 0, 8, 0]); // version, flags, method
            bytes.extend_from_slice(&[0; 4]); // time, date
            bytes.extend_from_slice(&[0; 4]); // crc
            bytes.extend_from_slice(&3u32.to_le_bytes()); // compressed size
            bytes.extend_from_slice(&3u32.to_le_bytes()); // size
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&0u16.to_le_bytes());
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&[3, 0, 0]);
        }
        bytes
    }

    fn ole_with(stream: &str) -> Vec<u8> {
        let mut bytes = with_prefix(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1], 1536);
        bytes[0x1E..0x20].copy_from_slice(&9u16.to_le_bytes()); // 512-byte sectors
        bytes[0x30..0x34].copy_from_slice(&1u32.to_le_bytes()); // directory at sector 1
        let name: Vec<u8> = stream.encode_utf16().flat_map(u16::to_le_bytes).collect();
        bytes[1024 + 128..1024 + 128 + name.len()].copy_from_slice(&name);
        bytes
    }

    /// An MPEG-1 layer III frame header, 128 kbit/s, 44.1 kHz (417 bytes a frame).
    fn mp3_frames(count: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..count {
            let mut frame = vec![0xFF, 0xFB, 0x90, 0x64];
            frame.resize(417, 0);
            bytes.extend_from_slice(&frame);
        }
        bytes
    }

    fn ebml(doctype: &str, codec: &str) -> Vec<u8> {
        let mut bytes = vec![
            0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86, 0x81, 0x01, 0x42, 0x82,
        ];
        bytes.push(0x80 | doctype.len() as u8);
        bytes.extend_from_slice(doctype.as_bytes());
        bytes.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0, 0, 0]);
        bytes.extend_from_slice(&[0x86, 0x80 | codec.len() as u8]);
        bytes.extend_from_slice(codec.as_bytes());
        bytes
    }

    fn bmp() -> Vec<u8> {
        let mut bytes = with_prefix(b"BM", 64);
        bytes[14..18].copy_from_slice(&40u32.to_le_bytes());
        bytes
    }

    fn riff(kind: &[u8; 4]) -> Vec<u8> {
        let mut bytes = b"RIFF\x24\0\0\0".to_vec();
        bytes.extend_from_slice(kind);
        bytes.resize(44, 0);
        bytes
    }

    /// Every allowed type, from contents as their writers make them, under a fitting name.
    fn samples() -> Vec<(Vec<u8>, &'static str, Sniffed)> {
        vec![
            (
                with_prefix(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'], 64),
                "a.jpg",
                JPEG,
            ),
            (
                with_prefix(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", 64),
                "a.png",
                PNG,
            ),
            (with_prefix(b"GIF89a", 64), "a.gif", GIF),
            (with_prefix(b"GIF87a", 64), "a.gif", GIF),
            (riff(b"WEBP"), "a.webp", WEBP),
            (bmp(), "a.bmp", BMP),
            (with_prefix(b"II*\0\x08\0\0\0", 64), "a.tif", TIFF),
            (with_prefix(b"MM\0*\0\0\0\x08", 64), "a.tiff", TIFF),
            (with_prefix(b"%PDF-1.7\n", 64), "a.pdf", PDF),
            (b"hello, world\nsecond line\n".to_vec(), "a.txt", TEXT),
            (b"name,phone\nAda,+15550001\n".to_vec(), "a.csv", CSV),
            (
                "caf\u{e9} cr\u{e8}me \u{1F600}\n".as_bytes().to_vec(),
                "menu.txt",
                TEXT,
            ),
            (
                b"\xEF\xBB\xBFwith a byte order mark".to_vec(),
                "bom.txt",
                TEXT,
            ),
            (b"\xFF\xFEh\0i\0\n\0".to_vec(), "utf16.txt", TEXT),
            (b"{\\rtf1\\ansi hello}".to_vec(), "a.rtf", RTF),
            (ole_with("WordDocument"), "a.doc", DOC),
            (ole_with("Workbook"), "a.xls", XLS),
            (ole_with("PowerPoint Document"), "a.ppt", PPT),
            (
                zip_entries(&["[Content_Types].xml", "_rels/.rels", "word/document.xml"]),
                "a.docx",
                DOCX,
            ),
            (
                zip_entries(&["[Content_Types].xml", "_rels/.rels", "xl/workbook.xml"]),
                "a.xlsx",
                XLSX,
            ),
            (
                zip_entries(&["[Content_Types].xml", "_rels/.rels", "ppt/presentation.xml"]),
                "a.pptx",
                PPTX,
            ),
            (
                ftyp(b"isom", &[b"isom", b"iso2", b"avc1", b"mp41"]),
                "a.mp4",
                MP4,
            ),
            (ftyp(b"mp42", &[b"mp42", b"isom"]), "a.mp4", MP4),
            (ftyp(b"qt  ", &[b"qt  "]), "a.mov", MOV),
            (
                with_prefix(b"\0\0\0\x08wide\0\0\0\x10mdat", 64),
                "old.mov",
                MOV,
            ),
            (ftyp(b"3gp4", &[b"isom", b"3gp4"]), "a.3gp", THREE_GP),
            (ftyp(b"3g2a", &[b"3g2a"]), "a.3g2", THREE_G2),
            (ebml("webm", "V_VP9"), "a.webm", WEBM),
            (riff(b"AVI "), "a.avi", AVI),
            (with_prefix(&[0, 0, 1, 0xBA, 0x44], 64), "a.mpg", MPEG),
            (with_prefix(b"ID3\x04\0\0\0\0\0\x10", 64), "a.mp3", MP3),
            (mp3_frames(3), "raw.mp3", MP3),
            (riff(b"WAVE"), "a.wav", WAV),
            (with_prefix(b"OggS\0\x02", 64), "a.ogg", OGG),
            (ftyp(b"M4A ", &[b"M4A ", b"mp42", b"isom"]), "a.m4a", M4A),
            (ftyp(b"isom", &[b"isom", b"mp42"]), "generic-brand.m4a", M4A),
            (vec![0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC], "a.aac", AAC),
            (ebml("webm", "A_OPUS"), "a.webm", WEBM_AUDIO),
            (ebml("webm", "A_VORBIS"), "a.weba", WEBM_AUDIO),
        ]
    }

    #[test]
    fn every_allowed_type_is_recognised_under_its_own_name_and_with_no_name() {
        for (bytes, name, expected) in samples() {
            assert_eq!(sniff(&bytes, name), Ok(expected), "{name}");
            let nameless = sniff(&bytes, "upload");
            // Without a name only the name-picked members of a family differ.
            match expected {
                CSV => assert_eq!(nameless, Ok(TEXT)),
                M4A if name.starts_with("generic") => assert_eq!(nameless, Ok(MP4)),
                _ => assert_eq!(nameless, Ok(expected), "{name} without a name"),
            }
        }
        let covered: std::collections::HashSet<Sniffed> =
            samples().into_iter().map(|s| s.2).collect();
        for allowed in ALLOWED {
            assert!(covered.contains(allowed), "no sample of {}", allowed.mime);
        }
    }

    #[test]
    fn the_head_may_be_longer_than_sniff_bytes_or_cut_anywhere() {
        let mut long = b"plain text ".repeat(2000);
        long.push(0); // past SNIFF_BYTES: not looked at
        assert_eq!(sniff(&long, "long.txt"), Ok(TEXT));
        // A multi-byte character cut by the end of the head is still text.
        let mut cut = "\u{e9}t\u{e9}".repeat(10).into_bytes();
        cut.push(0xC3);
        assert_eq!(sniff(&cut, "notes.txt"), Ok(TEXT));
    }

    #[test]
    fn executables_are_refused_whatever_their_name() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (with_prefix(b"\x7fELF\x02\x01\x01", 64), "an ELF executable"),
            (
                with_prefix(b"MZ\x90\0\x03\0", 128),
                "a Windows executable (MZ/PE)",
            ),
            (
                with_prefix(&[0xCF, 0xFA, 0xED, 0xFE, 7, 0, 0, 1], 64),
                "a Mach-O executable",
            ),
            (
                with_prefix(&[0xFE, 0xED, 0xFA, 0xCE], 64),
                "a Mach-O executable",
            ),
            (
                with_prefix(&[0xCA, 0xFE, 0xBA, 0xBE], 64),
                "a Mach-O universal binary or Java class",
            ),
            (b"#!/bin/sh\nrm -rf /\n".to_vec(), "a script (#!)"),
            (
                b"\xEF\xBB\xBF#!/usr/bin/env python\n".to_vec(),
                "a script (#!)",
            ),
            (with_prefix(b"\0asm\x01\0\0\0", 64), "a WebAssembly module"),
            (with_prefix(b"dex\n035\0", 64), "an Android DEX file"),
            (
                zip_entries(&["META-INF/MANIFEST.MF", "Main.class"]),
                "a Java or Android package",
            ),
            (
                zip_entries(&["AndroidManifest.xml", "classes.dex"]),
                "a Java or Android package",
            ),
        ];
        for (bytes, kind) in cases {
            let refusal = sniff(&bytes, "holiday.jpg").expect_err(kind);
            assert_eq!(
                refusal,
                Refusal::Executable {
                    kind,
                    declared: Some("jpg".into())
                }
            );
            let message = refusal.to_string();
            assert!(
                message.contains(kind) && message.contains(".jpg"),
                "{message}"
            );
            assert_eq!(
                sniff(&bytes, "tool"),
                Err(Refusal::Executable {
                    kind,
                    declared: None
                })
            );
        }
    }

    #[test]
    fn a_windows_installer_in_an_ole_container_is_an_executable() {
        let mut msi = ole_with("SummaryInformation");
        let root = 1024 + 0x50;
        msi[root..root + 16].copy_from_slice(&[
            0x84, 0x10, 0x0C, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46,
        ]);
        assert!(matches!(
            sniff(&msi, "report.doc"),
            Err(Refusal::Executable {
                kind: "a Windows Installer package",
                ..
            })
        ));
        // An OLE file we cannot place is taken by its name only if the name is an Office one.
        let unplaced = ole_with("SummaryInformation");
        assert_eq!(sniff(&unplaced, "old.xls"), Ok(XLS));
        assert!(matches!(
            sniff(&unplaced, "mail.msg"),
            Err(Refusal::NotAllowed { .. })
        ));
    }

    #[test]
    fn an_executable_name_is_refused_even_over_harmless_contents() {
        for name in [
            "setup.exe",
            "run.BAT",
            "x.sh",
            "macro.vbs",
            "C:\\dl\\a.ps1",
            "app.jar",
        ] {
            let refusal = sniff(b"just some text\n", name).expect_err(name);
            assert!(
                matches!(refusal, Refusal::ExecutableName { .. }),
                "{name}: {refusal:?}"
            );
            assert!(refusal.to_string().contains("executable"));
        }
    }

    #[test]
    fn archives_and_unlisted_types_are_refused_with_what_they_are() {
        let mut tar = vec![0x41; 512];
        tar[257..262].copy_from_slice(b"ustar");
        let cases: Vec<(Vec<u8>, Refusal)> = vec![
            (
                zip_entries(&["notes/a.txt", "notes/b.txt"]),
                Refusal::Archive {
                    kind: "a ZIP archive",
                },
            ),
            (
                b"PK\x05\x06".to_vec(),
                Refusal::Archive {
                    kind: "a ZIP archive",
                },
            ),
            (
                with_prefix(b"Rar!\x1a\x07\x01\0", 64),
                Refusal::Archive {
                    kind: "a RAR archive",
                },
            ),
            (
                with_prefix(&[b'7', b'z', 0xBC, 0xAF, 0x27, 0x1C], 64),
                Refusal::Archive {
                    kind: "a 7-Zip archive",
                },
            ),
            (
                with_prefix(&[0x1F, 0x8B, 8, 0], 64),
                Refusal::Archive {
                    kind: "a gzip archive",
                },
            ),
            (
                with_prefix(b"BZh9", 64),
                Refusal::Archive {
                    kind: "a bzip2 archive",
                },
            ),
            (
                with_prefix(&[0xFD, b'7', b'z', b'X', b'Z', 0], 64),
                Refusal::Archive {
                    kind: "an xz archive",
                },
            ),
            (
                with_prefix(&[0x28, 0xB5, 0x2F, 0xFD], 64),
                Refusal::Archive {
                    kind: "a Zstandard archive",
                },
            ),
            (
                tar,
                Refusal::Archive {
                    kind: "a tar archive",
                },
            ),
            (
                with_prefix(b"fLaC\0\0\0\x22", 64),
                Refusal::NotAllowed { kind: "FLAC audio" },
            ),
            (
                ftyp(b"heic", &[b"mif1", b"heic"]),
                Refusal::NotAllowed {
                    kind: "a HEIC/HEIF image",
                },
            ),
            (
                ftyp(b"avif", &[b"avif", b"mif1"]),
                Refusal::NotAllowed {
                    kind: "an AVIF image",
                },
            ),
            (
                ebml("matroska", "V_MPEG4/ISO/AVC"),
                Refusal::NotAllowed {
                    kind: "a Matroska video (.mkv)",
                },
            ),
            (
                b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
                Refusal::NotAllowed {
                    kind: "an SVG image",
                },
            ),
            (
                b"<?xml version=\"1.0\"?>\n<svg/>".to_vec(),
                Refusal::NotAllowed {
                    kind: "an SVG image",
                },
            ),
            (
                b"<?xml version=\"1.0\"?>\n<a/>".to_vec(),
                Refusal::NotAllowed {
                    kind: "an XML document",
                },
            ),
            (
                b"  <!DOCTYPE html><script>alert(1)</script>".to_vec(),
                Refusal::NotAllowed {
                    kind: "an HTML document",
                },
            ),
            (
                b"%!PS-Adobe-3.0\n".to_vec(),
                Refusal::NotAllowed {
                    kind: "a PostScript document",
                },
            ),
            (
                zip_entries(&["mimetype", "content.xml"])
                    .into_iter()
                    .chain(*b"application/vnd.oasis.opendocument.text")
                    .collect(),
                Refusal::NotAllowed {
                    kind: "an OpenDocument file",
                },
            ),
        ];
        for (bytes, expected) in cases {
            let refusal = sniff(&bytes, "upload").expect_err("refused");
            assert_eq!(refusal, expected);
            assert!(
                refusal.to_string().contains("accepted are images"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn unknown_bytes_and_empty_input_are_refused() {
        assert_eq!(sniff(b"", "a.jpg"), Err(Refusal::Empty));
        assert_eq!(Refusal::Empty.to_string(), "the file is empty");
        let noise: Vec<u8> = (0u32..4096)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(sniff(&noise, "data.bin"), Err(Refusal::Unknown));
        assert_eq!(
            sniff(&[0x00, 0x01, 0x02, 0x03, 0x04], "x"),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            sniff(b"text with a NUL\0 inside", "a.txt"),
            Err(Refusal::Unknown)
        );
        assert_eq!(
            sniff(b"\x01\x02\x03\x04\x05\x06 mostly controls", "a.txt"),
            Err(Refusal::Unknown)
        );
        assert_eq!(sniff(&riff(b"CDXA"), "a.avi"), Err(Refusal::Unknown));
        assert_eq!(sniff(b"\xEF\xBB\xBF", "a.txt"), Err(Refusal::Unknown));
        // A lone frame sync followed by garbage is not MP3.
        let mut fake = vec![0xFF, 0xFB, 0x90, 0x64];
        fake.extend(std::iter::repeat_n(0x11, 1000));
        assert_eq!(sniff(&fake, "a.mp3"), Err(Refusal::Unknown));
        assert!(
            Refusal::Unknown
                .to_string()
                .contains("could not be recognised")
        );
    }

    #[test]
    fn a_name_that_lies_within_a_category_is_tolerated_and_the_contents_win() {
        let png = with_prefix(b"\x89PNG\r\n\x1a\n", 64);
        assert_eq!(sniff(&png, "photo.jpg"), Ok(PNG));
        assert_eq!(sniff(&with_prefix(b"%PDF-1.4", 64), "report.docx"), Ok(PDF));
        assert_eq!(sniff(b"a,b\n1,2\n", "table.txt"), Ok(TEXT));
        assert_eq!(sniff(&riff(b"AVI "), "clip.mp4"), Ok(AVI));
        // Unknown extensions claim nothing.
        assert_eq!(sniff(&png, "scan.dat"), Ok(PNG));
        assert_eq!(sniff(b"# Notes\n", "README.md"), Ok(TEXT));
        // A container family lets the name pick audio or video.
        assert_eq!(sniff(&ftyp(b"M4A ", &[b"isom"]), "song.mp4"), Ok(M4A));
        assert_eq!(sniff(&ebml("webm", "A_OPUS"), "voice.webm"), Ok(WEBM_AUDIO));
    }

    #[test]
    fn a_name_that_lies_across_categories_is_refused_naming_both() {
        let pdf = with_prefix(b"%PDF-1.7", 64);
        let refusal = sniff(&pdf, "selfie.jpg").expect_err("cross-category");
        assert_eq!(
            refusal,
            Refusal::Mismatch {
                declared: "jpg".into(),
                declared_category: Category::Images,
                actual: PDF
            }
        );
        assert_eq!(
            refusal.to_string(),
            "the name says .jpg (an image) but the contents are application/pdf (a document)"
        );
        let png = with_prefix(b"\x89PNG\r\n\x1a\n", 64);
        assert!(
            matches!(sniff(&png, "song.MP3"), Err(Refusal::Mismatch { declared, .. }) if declared == "mp3")
        );
        assert!(matches!(
            sniff(&ftyp(b"isom", &[]), "a.wav"),
            Err(Refusal::Mismatch { .. })
        ));
        assert!(matches!(
            sniff(&mp3_frames(2), "clip.avi"),
            Err(Refusal::Mismatch { .. })
        ));
    }

    #[test]
    fn declared_extensions_come_from_the_last_component_only() {
        assert_eq!(declared_extension("a/b.c/photo.JPG"), Some("jpg".into()));
        assert_eq!(declared_extension("C:\\x.exe\\photo"), None);
        assert_eq!(declared_extension(".bashrc"), None);
        assert_eq!(declared_extension("archive.tar.gz"), Some("gz".into()));
        assert_eq!(declared_extension("trailing.pdf. "), Some("pdf".into()));
        assert_eq!(declared_extension("weird.j p g"), None);
    }

    #[test]
    fn categories_have_stable_names() {
        for c in [
            Category::Images,
            Category::Documents,
            Category::Videos,
            Category::Audio,
        ] {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_string(&c).expect("json"), format!("\"{c}\""));
        }
        assert_eq!(Category::parse("executables"), None);
        assert!(JPEG.is_image() && !PDF.is_image());
    }

    #[test]
    fn display_names_lose_paths_controls_and_bidi_tricks() {
        assert_eq!(safe_display_name("../../etc/passwd"), "passwd");
        assert_eq!(
            safe_display_name("..\\..\\windows\\system.ini"),
            "system.ini"
        );
        assert_eq!(safe_display_name("a\0b.txt"), "ab.txt");
        assert_eq!(safe_display_name("line\nbreak\r\n.pdf"), "linebreak.pdf");
        assert_eq!(safe_display_name("tab\there.txt"), "tabhere.txt");
        // Shown as "invoicefdp.exe" reversed: "invoiceexe.pdf" without the override.
        assert_eq!(
            safe_display_name("invoice\u{202E}fdp.exe"),
            "invoicefdp.exe"
        );
        assert_eq!(
            safe_display_name("zero\u{200B}width\u{2066}iso\u{2069}.png"),
            "zerowidthiso.png"
        );
        assert_eq!(safe_display_name("  spaced name.jpg  "), "spaced name.jpg");
        assert_eq!(
            safe_display_name("caf\u{e9} \u{1F600}.jpg"),
            "caf\u{e9} \u{1F600}.jpg"
        );
        assert_eq!(safe_display_name("nbsp\u{a0}name.jpg"), "nbsp name.jpg");
        assert_eq!(
            safe_display_name("windows.trailing. . "),
            "windows.trailing"
        );
        for empty in ["", "   ", "..", ".", "a/", "\u{202E}\0\n", "dir/..", "..\\"] {
            assert_eq!(safe_display_name(empty), "file", "{empty:?}");
        }
    }

    #[test]
    fn long_display_names_are_cut_on_a_character_boundary_keeping_the_extension() {
        let long = format!("{}.jpeg", "\u{e9}".repeat(300));
        let name = safe_display_name(&long);
        assert!(name.len() <= MAX_DISPLAY_NAME, "{}", name.len());
        assert!(name.ends_with("\u{e9}.jpeg"));
        let no_extension = safe_display_name(&"x".repeat(1000));
        assert_eq!(no_extension.len(), MAX_DISPLAY_NAME);
    }

    #[test]
    fn stored_names_are_generated_unique_and_recognisable() {
        let a = stored_name("jpg");
        let b = stored_name("jpg");
        assert_ne!(a, b);
        assert!(is_stored_name(&a), "{a}");
        assert!(a.ends_with(".jpg") && a.len() == 53, "{a}");
        let year: i32 = a[..4].parse().expect("a year");
        assert!(year >= 2025);
        // Whatever is passed, only letters and digits reach the name.
        let hostile = stored_name("../../x\0/y");
        assert!(is_stored_name(&hostile), "{hostile}");
        assert!(hostile.ends_with(".xy") && !hostile.contains('/'));
        assert!(is_stored_name(&stored_name("")));
        for name in [
            "",
            "passwd",
            "../20260101t000000z-0123456789abcdef0123456789abcdef.jpg",
            "20260101t000000z-0123456789abcdef0123456789abcdef.jpg/..",
            "20260101t000000z-0123456789ABCDEF0123456789abcdef.jpg",
            "20260101t000000z-0123456789abcdef0123456789abcdef.",
            "20260101X000000Z-0123456789abcdef0123456789abcdef.jpg",
            "20260101T000000Z-0123456789abcdef0123456789abcdef.jpg",
        ] {
            assert!(!is_stored_name(name), "{name}");
        }
        assert!(is_stored_name(
            "20260101t000000z-0123456789abcdef0123456789abcdef.jpg"
        ));
    }

    #[test]
    fn no_prefix_or_corruption_of_any_sample_makes_sniff_panic() {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (bytes, name, _) in samples() {
            for cut in 0..=bytes.len().min(700) {
                let _ = sniff(&bytes[..cut], name);
            }
            for _ in 0..200 {
                let mut corrupt = bytes.clone();
                corrupt.resize(bytes.len() + (random() % 600) as usize, 0);
                for _ in 0..8 {
                    let at = (random() as usize) % corrupt.len();
                    corrupt[at] = random() as u8;
                }
                let _ = sniff(&corrupt, name);
            }
        }
    }

    #[test]
    fn mpeg_audio_frame_lengths_follow_the_standard() {
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xFB, 0x90, 0x64]), Some(417)); // 128k, 44.1k, III
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xFB, 0x92, 0x64]), Some(418)); // padded
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xF3, 0x90, 0x64]), Some(261)); // MPEG-2 III, 80k, 22.05k
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xFD, 0x94, 0x64]), Some(480)); // MPEG-1 II, 160k, 48k
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xFB, 0xF0, 0x64]), None); // bad bitrate
        assert_eq!(mpeg_audio_frame(&[0xFF, 0xEB, 0x90, 0x64]), None); // reserved version
    }
}
