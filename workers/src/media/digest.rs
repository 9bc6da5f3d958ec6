//! SHA-256 of a whole upload, as a stream: the content hash files are deduplicated by
//! and served as their `ETag`.
//!
//! - [`digest_reader`]: a blocking [`Read`], in [`BUFFER_SIZE`] reads.
//! - [`digest_file`] / [`digest_file_blocking`]: a file on disk. The blocking variant
//!   reads on a second thread while this one hashes (double buffering), so the copy out
//!   of the page cache overlaps the hashing; the async variant runs it in
//!   `spawn_blocking`.
//! - [`digest_async`]: any [`AsyncRead`] (an object store's body): reads on the runtime,
//!   hashes on a blocking thread, handing over whole buffers, so a 50 MiB file never
//!   holds an async worker thread for the ~25 ms of hashing it costs.
//! - [`Sha256Hasher`]: the incremental form, for a caller that already has chunks.
//!
//! Speed: `sha2` 0.10 picks the x86 SHA extensions (SHA-NI) at run time through
//! `cpufeatures`, so no `asm` feature is needed (it only replaces the software fallback).

use std::{fmt, fs::File, io, io::Read, path::Path, str::FromStr, sync::mpsc};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The size of one read. Large enough that the per-call overhead (a syscall, a channel
/// hand-over) is lost in the hashing of the buffer.
pub const BUFFER_SIZE: usize = 1 << 20;

/// A SHA-256 digest as 64 lowercase hex characters: parsed at the boundary, so a value
/// of this type is always well-formed (a dedup key, an object key part, an `ETag`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(String);

impl Sha256Digest {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for byte in bytes {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
        Sha256Digest(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 digest is 64 hexadecimal characters")]
pub struct ParseDigestError;

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    /// Accepts either case; the digest is kept in lowercase.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Digest(s.to_ascii_lowercase()))
        } else {
            Err(ParseDigestError)
        }
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = ParseDigestError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Sha256Digest> for String {
    fn from(digest: Sha256Digest) -> Self {
        digest.0
    }
}

impl AsRef<str> for Sha256Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.0)
    }
}

/// What hashing a stream tells: its digest and how many bytes it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub sha256: Sha256Digest,
    pub size: u64,
}

/// SHA-256 fed piece by piece, counting the bytes.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    size: u64,
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn finish(self) -> Digested {
        Digested {
            sha256: Sha256Digest::from_bytes(self.inner.finalize().into()),
            size: self.size,
        }
    }
}

/// Hashes everything `reader` yields, in [`BUFFER_SIZE`] reads, on this thread.
pub fn digest_reader<R: Read>(mut reader: R) -> io::Result<Digested> {
    let mut hasher = Sha256Hasher::new();
    let mut buffer = vec![0u8; BUFFER_SIZE];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(hasher.finish()),
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hashes a file, reading on a helper thread while this one hashes: two buffers go back
/// and forth, so the read of one overlaps the hashing of the other.
pub fn digest_file_blocking(path: &Path) -> io::Result<Digested> {
    let mut file = File::open(path)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        // Cannot fail: the receiver is alive and there is room for both.
        let _ = empty_tx.send(vec![0u8; BUFFER_SIZE]);
    }
    let reader = std::thread::Builder::new()
        .name("sha256-read".into())
        .spawn(move || {
            // Ends when the file does, on an error, or when the hasher has hung up.
            while let Ok(mut buffer) = empty_rx.recv() {
                buffer.resize(BUFFER_SIZE, 0);
                let filled = fill(&mut file, &mut buffer);
                let done = !matches!(filled, Ok(n) if n > 0);
                let sent = full_tx.send(filled.map(|n| {
                    buffer.truncate(n);
                    buffer
                }));
                if done || sent.is_err() {
                    return;
                }
            }
        })?;
    let mut hasher = Sha256Hasher::new();
    let result = loop {
        match full_rx.recv() {
            Ok(Ok(buffer)) if buffer.is_empty() => break Ok(hasher.finish()),
            Ok(Ok(buffer)) => {
                hasher.update(&buffer);
                let _ = empty_tx.send(buffer); // The reader may have stopped: fine.
            }
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(io::Error::other("the file reader stopped unexpectedly")),
        }
    };
    drop(empty_tx);
    drop(full_rx);
    let _ = reader.join();
    result
}

/// Reads until `buffer` is full or the input ends; the count read.
fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// [`digest_file_blocking`] off the async threads.
pub async fn digest_file(path: impl AsRef<Path>) -> io::Result<Digested> {
    let path = path.as_ref().to_owned();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| digest_file_blocking(&path)))
        .await
        .map_err(|e| io::Error::other(format!("the hashing task failed: {e}")))?
}

/// Hashes an async stream: reads fill [`BUFFER_SIZE`] buffers on the runtime and a
/// blocking thread hashes them (at most two buffers in flight, so memory stays bounded
/// and a slow reader never piles up work).
pub async fn digest_async<R: AsyncRead + Unpin>(mut reader: R) -> io::Result<Digested> {
    let (full_tx, mut full_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let (empty_tx, mut empty_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let span = tracing::Span::current();
    let hashing = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let mut hasher = Sha256Hasher::new();
            while let Some(buffer) = full_rx.blocking_recv() {
                hasher.update(&buffer);
                let _ = empty_tx.try_send(buffer); // Full or closed: the buffer is dropped.
            }
            hasher.finish()
        })
    });
    let mut spare = 2; // Buffers not yet allocated.
    loop {
        let mut buffer = match empty_rx.try_recv() {
            Ok(buffer) => buffer,
            Err(_) if spare > 0 => {
                spare -= 1;
                Vec::with_capacity(BUFFER_SIZE)
            }
            Err(_) => match empty_rx.recv().await {
                Some(buffer) => buffer,
                None => break, // The hasher is gone: its result tells why.
            },
        };
        buffer.clear();
        while buffer.len() < BUFFER_SIZE {
            let room = BUFFER_SIZE - buffer.len();
            if (&mut reader)
                .take(room as u64)
                .read_buf(&mut buffer)
                .await?
                == 0
            {
                break;
            }
        }
        let at_end = buffer.len() < BUFFER_SIZE;
        if !buffer.is_empty() && full_tx.send(buffer).await.is_err() {
            break;
        }
        if at_end {
            break;
        }
    }
    drop(full_tx);
    hashing
        .await
        .map_err(|e| io::Error::other(format!("the hashing task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    /// FIPS 180-2's two-block message.
    const TWO_BLOCKS: &str = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
    /// One million times `a`.
    const MILLION_A: &str = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

    /// Bytes that are not one repeated pattern, so an off-by-a-buffer bug shows.
    fn generated(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn known_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (b"", EMPTY),
            (b"abc", ABC),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                TWO_BLOCKS,
            ),
        ];
        for (input, expected) in cases {
            let digested = digest_reader(input).expect("read");
            assert_eq!(digested.sha256.as_str(), expected);
            assert_eq!(digested.size, input.len() as u64);
        }
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            digest_reader(&million[..]).expect("read").sha256.as_str(),
            MILLION_A
        );
    }

    #[test]
    fn the_incremental_hasher_does_not_care_how_the_input_is_cut() {
        let data = generated(3 * BUFFER_SIZE + 12_345);
        let whole = digest_reader(&data[..]).expect("read");
        let mut hasher = Sha256Hasher::new();
        for piece in data.chunks(7_919) {
            hasher.update(piece);
        }
        assert_eq!(hasher.size(), data.len() as u64);
        assert_eq!(hasher.finish(), whole);
    }

    #[test]
    fn digests_parse_only_64_hex_characters() {
        let upper = ABC.to_ascii_uppercase();
        let parsed: Sha256Digest = upper.parse().expect("uppercase is fine");
        assert_eq!(parsed.as_str(), ABC);
        assert_eq!(parsed.to_string(), ABC);
        for bad in [
            "",
            "abc",
            &ABC[..63],
            &format!("{ABC}0"),
            &ABC.replace('a', "g"),
            &format!(" {}", &ABC[1..]),
        ] {
            assert_eq!(
                bad.parse::<Sha256Digest>(),
                Err(ParseDigestError),
                "{bad:?}"
            );
        }
        let json = serde_json::to_string(&parsed).expect("json");
        assert_eq!(json, format!("\"{ABC}\""));
        assert_eq!(
            serde_json::from_str::<Sha256Digest>(&json).expect("back"),
            parsed
        );
        assert!(serde_json::from_str::<Sha256Digest>("\"nope\"").is_err());
        assert_eq!(
            Sha256Digest::from_bytes([0xAB; 32]).as_str(),
            "ab".repeat(32)
        );
    }

    #[test]
    fn a_file_hashes_the_same_as_sha256sum() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Sizes around the buffer edges, through the double-buffered path.
        for len in [
            0,
            1,
            BUFFER_SIZE - 1,
            BUFFER_SIZE,
            BUFFER_SIZE + 1,
            5 * BUFFER_SIZE / 2,
        ] {
            let path = dir.path().join(format!("f{len}"));
            let data = generated(len);
            std::fs::write(&path, &data).expect("write");
            let ours = digest_file_blocking(&path).expect("hash");
            assert_eq!(ours, digest_reader(&data[..]).expect("read"), "{len}");
            assert_eq!(ours.size, len as u64);
            let output = std::process::Command::new("sha256sum")
                .arg(&path)
                .output()
                .expect("sha256sum runs");
            assert!(output.status.success());
            let theirs = String::from_utf8(output.stdout).expect("utf-8");
            assert_eq!(
                theirs.split_whitespace().next(),
                Some(ours.sha256.as_str()),
                "{len}"
            );
        }
        assert_eq!(
            digest_file_blocking(&dir.path().join("missing"))
                .expect_err("no file")
                .kind(),
            io::ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn the_async_paths_agree_with_the_blocking_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = generated(4 * BUFFER_SIZE + 77);
        let path = dir.path().join("upload");
        std::fs::write(&path, &data).expect("write");
        let expected = digest_reader(&data[..]).expect("read");
        assert_eq!(digest_file(&path).await.expect("file"), expected);
        let file = tokio::fs::File::open(&path).await.expect("open");
        assert_eq!(digest_async(file).await.expect("async file"), expected);
        // A reader that hands out odd-sized pieces, as a network body does.
        let (mut writer, reader) = tokio::io::duplex(10_007);
        let feed = data.clone();
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in feed.chunks(65_521) {
                writer.write_all(piece).await.expect("write");
            }
        });
        assert_eq!(digest_async(reader).await.expect("duplex"), expected);
        writing.await.expect("writer");
        assert_eq!(
            digest_async(&b""[..]).await.expect("empty").sha256.as_str(),
            EMPTY
        );
    }

    #[tokio::test]
    async fn a_failing_reader_fails_the_digest() {
        struct Broken(usize);
        impl AsyncRead for Broken {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if self.0 == 0 {
                    return std::task::Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "gone",
                    )));
                }
                self.0 -= 1;
                let n = buf.remaining().min(1000);
                buf.put_slice(&[1; 1000][..n]);
                std::task::Poll::Ready(Ok(()))
            }
        }
        let error = digest_async(Broken(3000)).await.expect_err("broken");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
    }
}
