//! Streaming keeps memory flat: a 50 MiB object (the default `MAX_FILE_SIZE`) put and
//! read back raises the process's peak resident memory by a small buffer on the disk
//! and by about one part on S3, never by the object's size.
//!
//! One test in its own binary, so no other test allocates while it measures. The peak
//! is the kernel's (`VmHWM`), reset before each step through `/proc/self/clear_refs`.

mod support;

use std::future::Future;

use commcenter_shared::platform::blob::{BlobStore, ObjectKey};
use futures_util::StreamExt as _;
use support::{Fixture, body, zeros};

const MIB: u64 = 1 << 20;
const OBJECT: u64 = 50 * MIB;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// How far `step` raises the peak resident memory above where it started, in bytes.
fn peak_growth<T>(runtime: &tokio::runtime::Runtime, step: impl Future<Output = T>) -> (T, u64) {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak (clear_refs)");
    let before = status_kib("VmRSS:");
    let out = runtime.block_on(step);
    let peak = status_kib("VmHWM:");
    (out, peak.saturating_sub(before) * 1024)
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    store: &BlobStore,
    put_bound: u64,
    get_bound: u64,
) {
    let k = ObjectKey::parse("memory/fifty").expect("key");
    // Warm up with a small object (client, connection pool, runtime threads); a large
    // one would leave freed memory in the allocator for the measured put to reuse.
    runtime
        .block_on(store.put(
            &ObjectKey::parse("memory/warm").expect("key"),
            body(b"warm", 2),
            10,
        ))
        .expect("warm-up put");

    let (written, put_growth) = peak_growth(runtime, store.put(&k, zeros(OBJECT), OBJECT));
    assert_eq!(written.expect("put"), OBJECT);

    let (read, get_growth) = peak_growth(runtime, async {
        let read = store.get(&k, None).await.expect("get");
        let mut total = 0u64;
        let mut stream = read.stream;
        while let Some(chunk) = stream.next().await {
            total += chunk.expect("chunk").len() as u64;
        }
        total
    });
    assert_eq!(read, OBJECT);
    eprintln!(
        "{name}: 50 MiB put raised peak RSS by {:.1} MiB (bound {} MiB), get by {:.1} MiB (bound {} MiB)",
        put_growth as f64 / MIB as f64,
        put_bound / MIB,
        get_growth as f64 / MIB as f64,
        get_bound / MIB,
    );
    assert!(
        put_growth <= put_bound,
        "{name}: put raised peak RSS by {put_growth} bytes"
    );
    assert!(
        get_growth <= get_bound,
        "{name}: get raised peak RSS by {get_growth} bytes"
    );
}

#[test]
fn fifty_mib_through_either_store_keeps_memory_flat() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let disk = Fixture::disk();
    let s3 = runtime.block_on(Fixture::s3());
    // Disk: a 256 KiB write buffer and tokio's own; S3: one 5 MiB part, plus the
    // HTTP client's buffers.
    measure(&runtime, "disk", &disk.store, 6 * MIB, 6 * MIB);
    measure(&runtime, "s3", &s3.store, 5 * MIB + 6 * MIB, 6 * MIB);
}
