//! The pure media layer of uploads: what a file is, its content hash, its thumbnail.
//! No I/O but the bytes handed in (and, for [`digest`], the reader or file given);
//! the api calls [`sniff`] on the request path, the `file.process` job all three.
//!
//! - [`sniff`] (`commcenter_shared::domain::filetype`, as the api sniffs too): the type by magic
//!   bytes against the allow-list, the refusal reasons, safe display names and
//!   generated stored names.
//! - [`digest`]: streaming SHA-256 (sync, file and async), the `Sha256Digest` newtype.
//! - [`thumbnail`]: bounded, panic-proof decoding and the JPEG/PNG thumbnail; large
//!   baseline JPEGs are read at 1/8 scale from their DC coefficients (`jpeg_dc`).

pub mod digest;
/// Public for its fuzz target (`fuzz/`); the thumbnailer is its one caller.
pub mod jpeg_dc;
/// What a file is, by its first bytes: shared with the api, which sniffs on upload.
pub use commcenter_shared::domain::filetype as sniff;
pub mod thumbnail;
