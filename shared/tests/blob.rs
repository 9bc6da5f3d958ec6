//! The blob store against real backends: a directory on the disk, and an S3-compatible
//! server (moto) on loopback that this test binary starts (see `support`). Every check
//! runs against both, through the same `BlobStore` API, and looks at what the backend
//! really holds afterwards: no temporary file, no object, no multipart upload left.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use commcenter_shared::platform::blob::{
    BlobError, BlobStore, ByteRange, ObjectKey, ResolvedRange, S3Store,
};
use futures_util::{StreamExt as _, stream};
use support::{Fixture, body, closed_port, data, read_all, s3_endpoint, s3_settings};

const MIB: usize = 1 << 20;

fn key(raw: &str) -> ObjectKey {
    ObjectKey::parse(raw).expect("a valid key")
}

async fn get_all(store: &BlobStore, key: &ObjectKey) -> Vec<u8> {
    let read = store.get(key, None).await.expect("get");
    assert_eq!(read.total_size, read.content_length);
    assert_eq!(read.range, None);
    let bytes = read_all(read.stream).await.expect("reading the object");
    assert_eq!(bytes.len() as u64, read.content_length);
    bytes
}

/// Runs each check against a disk store and an S3 store, as `disk::check` and `s3::check`.
macro_rules! on_both_stores {
    ($($check:ident),* $(,)?) => {
        mod disk {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Fixture::disk()).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::Fixture::s3().await).await
                }
            )*
        }
    };
}

on_both_stores!(
    small_round_trip,
    multipart_sized_round_trip,
    part_boundaries,
    ranges,
    ranges_of_empty_and_missing_objects,
    too_large_leaves_nothing,
    too_large_past_a_part_leaves_nothing,
    too_large_keeps_the_previous_object,
    zero_byte_object,
    missing_key,
    delete_is_idempotent,
    failing_body_leaves_nothing,
    dropped_put_leaves_nothing,
    overwrite_replaces,
);

async fn small_round_trip(f: Fixture) {
    let k = key("files/2026/11/24/small.bin");
    let bytes = data(1000, 1);
    // On a spawned task, as the api and workers run it: the put's future is Send.
    let (store, task_key, body) = (f.store.clone(), k.clone(), body(&bytes, 7));
    let written = tokio::spawn(async move { store.put(&task_key, body, 50 * MIB as u64).await })
        .await
        .expect("the put task")
        .expect("put");
    assert_eq!(written, 1000);
    assert_eq!(f.store.head(&k).await.expect("head"), Some(1000));
    assert_eq!(get_all(&f.store, &k).await, bytes);
    assert_eq!(f.contents().await, ["files/2026/11/24/small.bin"]);
}

async fn multipart_sized_round_trip(f: Fixture) {
    // 12 MiB: three parts of 5 MiB, 5 MiB and 2 MiB on S3.
    let k = key("files/big.bin");
    let bytes = data(12 * MIB, 2);
    let written = f
        .store
        .put(&k, body(&bytes, 64 * 1024), 50 * MIB as u64)
        .await
        .expect("put");
    assert_eq!(written, bytes.len() as u64);
    assert_eq!(
        f.store.head(&k).await.expect("head"),
        Some(bytes.len() as u64)
    );
    assert_eq!(get_all(&f.store, &k).await, bytes);

    // A range across the first part boundary.
    let (first, last) = (5 * MIB as u64 - 10, 5 * MIB as u64 + 9);
    let read = f
        .store
        .get(&k, Some(ByteRange::Inclusive { first, last }))
        .await
        .expect("ranged get");
    assert_eq!(read.total_size, bytes.len() as u64);
    assert_eq!(read.content_length, 20);
    assert_eq!(
        read_all(read.stream).await.expect("read"),
        &bytes[first as usize..=last as usize]
    );

    // The same bytes in one 12 MiB chunk.
    let one = key("files/big-one-chunk.bin");
    let written = f
        .store
        .put(&one, body(&bytes, bytes.len()), 50 * MIB as u64)
        .await
        .expect("put");
    assert_eq!(written, bytes.len() as u64);
    assert_eq!(get_all(&f.store, &one).await, bytes);
    assert_eq!(
        f.contents().await,
        ["files/big-one-chunk.bin", "files/big.bin"]
    );
}

/// Sizes around the 5 MiB part: one PutObject, one full part and a byte, two full parts.
async fn part_boundaries(f: Fixture) {
    for (name, len) in [
        ("a", 5 * MIB),
        ("b", 5 * MIB + 1),
        ("c", 10 * MIB),
        ("d", 5 * MIB - 1),
    ] {
        let k = key(&format!("edge/{name}"));
        let bytes = data(len, len as u64);
        let written = f
            .store
            .put(&k, body(&bytes, 1 << 17), 50 * MIB as u64)
            .await
            .expect("put");
        assert_eq!(written, len as u64, "{name}");
        assert_eq!(get_all(&f.store, &k).await, bytes, "{name}");
    }
    assert_eq!(f.contents().await, ["edge/a", "edge/b", "edge/c", "edge/d"]);
}

async fn ranges(f: Fixture) {
    let k = key("r/thousand");
    let bytes = data(1000, 3);
    f.store.put(&k, body(&bytes, 100), 1000).await.expect("put");
    for (range, (start, end)) in [
        (ByteRange::Inclusive { first: 0, last: 9 }, (0, 9)),
        (
            ByteRange::Inclusive {
                first: 100,
                last: 199,
            },
            (100, 199),
        ),
        (
            ByteRange::Inclusive {
                first: 990,
                last: 5000,
            },
            (990, 999),
        ),
        (
            ByteRange::Inclusive {
                first: 999,
                last: 999,
            },
            (999, 999),
        ),
        (ByteRange::From { first: 0 }, (0, 999)),
        (ByteRange::From { first: 990 }, (990, 999)),
        (ByteRange::Suffix { length: 10 }, (990, 999)),
        (ByteRange::Suffix { length: 5000 }, (0, 999)),
    ] {
        let read = f
            .store
            .get(&k, Some(range))
            .await
            .unwrap_or_else(|e| panic!("{range}: {e:?}"));
        assert_eq!(read.range, Some(ResolvedRange { start, end }), "{range}");
        assert_eq!(read.total_size, 1000, "{range}");
        assert_eq!(read.content_length, end - start + 1, "{range}");
        let got = read_all(read.stream).await.expect("read");
        assert_eq!(got, &bytes[start as usize..=end as usize], "{range}");
    }
    for range in [
        ByteRange::From { first: 1000 },
        ByteRange::Inclusive {
            first: 1000,
            last: 2000,
        },
        ByteRange::Inclusive {
            first: 5000,
            last: 6000,
        },
        ByteRange::Suffix { length: 0 },
    ] {
        match f.store.get(&k, Some(range)).await {
            Err(BlobError::RangeNotSatisfiable { size: 1000 }) => {}
            other => panic!("{range}: {other:?}"),
        }
    }
}

async fn ranges_of_empty_and_missing_objects(f: Fixture) {
    let empty = key("r/empty");
    f.store.put(&empty, body(&[], 1), 10).await.expect("put");
    for range in [
        ByteRange::From { first: 0 },
        ByteRange::Suffix { length: 1 },
        ByteRange::Inclusive { first: 0, last: 0 },
    ] {
        match f.store.get(&empty, Some(range)).await {
            Err(BlobError::RangeNotSatisfiable { size: 0 }) => {}
            other => panic!("{range}: {other:?}"),
        }
    }
    for range in [
        ByteRange::From { first: 0 },
        ByteRange::Suffix { length: 0 },
    ] {
        match f.store.get(&key("r/missing"), Some(range)).await {
            Err(BlobError::NotFound) => {}
            other => panic!("{range}: {other:?}"),
        }
    }
}

async fn too_large_leaves_nothing(f: Fixture) {
    let k = key("limit/a");
    let bytes = data(1001, 4);
    // One byte over, arriving in pieces and in one chunk.
    for chunk in [100, 1001] {
        match f.store.put(&k, body(&bytes, chunk), 1000).await {
            Err(BlobError::TooLarge { limit: 1000 }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(f.store.head(&k).await.expect("head"), None);
        assert_eq!(f.contents().await, Vec::<String>::new());
    }
    // A body that never ends: the limit is enforced as it streams.
    let endless = stream::repeat(Bytes::from_static(&[7; 4096])).map(Ok::<_, std::io::Error>);
    match f.store.put(&k, endless, MIB as u64).await {
        Err(BlobError::TooLarge { limit }) => assert_eq!(limit, MIB as u64),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.contents().await, Vec::<String>::new());
    // Exactly the limit is fine.
    let written = f
        .store
        .put(&k, body(&bytes[..1000], 100), 1000)
        .await
        .expect("put at the limit");
    assert_eq!(written, 1000);
    assert_eq!(get_all(&f.store, &k).await, &bytes[..1000]);
    assert_eq!(f.contents().await, ["limit/a"]);
}

/// Over the limit after a part went up: the multipart upload is aborted, not left.
async fn too_large_past_a_part_leaves_nothing(f: Fixture) {
    let k = key("limit/big");
    let limit = 6 * MIB as u64;
    let bytes = data(6 * MIB + 1, 5);
    match f.store.put(&k, body(&bytes, 64 * 1024), limit).await {
        Err(BlobError::TooLarge { limit: l }) => assert_eq!(l, limit),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.store.head(&k).await.expect("head"), None);
    assert_eq!(f.contents().await, Vec::<String>::new());
    let written = f
        .store
        .put(&k, body(&bytes[..6 * MIB], 64 * 1024), limit)
        .await
        .expect("put at the limit");
    assert_eq!(written, limit);
    assert_eq!(get_all(&f.store, &k).await, &bytes[..6 * MIB]);
    assert_eq!(f.contents().await, ["limit/big"]);
}

async fn too_large_keeps_the_previous_object(f: Fixture) {
    let k = key("limit/kept");
    let old = data(100, 6);
    f.store.put(&k, body(&old, 10), 1000).await.expect("put");
    let result = f.store.put(&k, body(&data(2000, 7), 10), 1000).await;
    assert!(
        matches!(result, Err(BlobError::TooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(get_all(&f.store, &k).await, old);
    assert_eq!(f.contents().await, ["limit/kept"]);
}

async fn zero_byte_object(f: Fixture) {
    let k = key("z/empty");
    let written = f
        .store
        .put(&k, body(&[], 1), 50 * MIB as u64)
        .await
        .expect("put");
    assert_eq!(written, 0);
    assert_eq!(f.store.head(&k).await.expect("head"), Some(0));
    let read = f.store.get(&k, None).await.expect("get");
    assert_eq!((read.total_size, read.content_length), (0, 0));
    assert!(read_all(read.stream).await.expect("read").is_empty());
    // Zero bytes under a limit of zero too.
    f.store
        .put(&key("z/empty2"), body(&[], 1), 0)
        .await
        .expect("put at limit 0");
    assert_eq!(f.contents().await, ["z/empty", "z/empty2"]);
}

async fn missing_key(f: Fixture) {
    let k = key("nothing/here");
    assert!(matches!(
        f.store.get(&k, None).await,
        Err(BlobError::NotFound)
    ));
    assert_eq!(f.store.head(&k).await.expect("head"), None);
    f.store.delete(&k).await.expect("deleting nothing");
    // A key below an object (a file where a directory would be, on the disk).
    f.store
        .put(&key("nothing/file"), body(b"x", 1), 10)
        .await
        .expect("put");
    let below = key("nothing/file/below");
    assert!(matches!(
        f.store.get(&below, None).await,
        Err(BlobError::NotFound)
    ));
    assert_eq!(f.store.head(&below).await.expect("head"), None);
    // A key naming a directory of the disk store is no object either.
    assert!(matches!(
        f.store.get(&key("nothing"), None).await,
        Err(BlobError::NotFound)
    ));
    assert_eq!(f.store.head(&key("nothing")).await.expect("head"), None);
}

async fn delete_is_idempotent(f: Fixture) {
    let k = key("d/one");
    f.store.put(&k, body(b"hello", 2), 10).await.expect("put");
    f.store.delete(&k).await.expect("delete");
    assert_eq!(f.store.head(&k).await.expect("head"), None);
    assert!(matches!(
        f.store.get(&k, None).await,
        Err(BlobError::NotFound)
    ));
    f.store.delete(&k).await.expect("delete again");
    assert_eq!(f.contents().await, Vec::<String>::new());
}

async fn failing_body_leaves_nothing(f: Fixture) {
    for len in [1000, 6 * MIB] {
        let k = key("fail/body");
        let failing = body(&data(len, 8), 64 * 1024).chain(stream::iter([Err(
            std::io::Error::other("client went away"),
        )]));
        match f.store.put(&k, failing, 50 * MIB as u64).await {
            Err(BlobError::Body(source)) => assert_eq!(source.to_string(), "client went away"),
            other => panic!("{len}: {other:?}"),
        }
        assert_eq!(f.contents().await, Vec::<String>::new(), "{len}");
    }
}

/// The client goes away mid-upload and the put's future is dropped: the temporary
/// file goes at once, the S3 multipart upload is aborted in the background.
async fn dropped_put_leaves_nothing(f: Fixture) {
    let k = key("fail/dropped");
    let stalled = body(&data(6 * MIB, 9), 64 * 1024).chain(stream::pending());
    let put = f.store.put(&k, stalled, 50 * MIB as u64);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), put)
            .await
            .is_err(),
        "the put should stall"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let contents = f.contents().await;
        if contents.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {contents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn overwrite_replaces(f: Fixture) {
    let k = key("o/same");
    f.store
        .put(&k, body(b"first version", 4), 100)
        .await
        .expect("put");
    f.store
        .put(&k, body(b"second", 4), 100)
        .await
        .expect("put again");
    assert_eq!(get_all(&f.store, &k).await, b"second");
    assert_eq!(f.contents().await, ["o/same"]);
}

#[test]
fn invalid_keys_are_refused() {
    for bad in [
        "../etc/passwd",
        "/abs",
        "a\0b",
        "",
        "a/../../b",
        "a\\b",
        "a\nb",
        "..",
        ".",
    ] {
        assert!(ObjectKey::parse(bad).is_err(), "{bad:?} was accepted");
    }
}

/// A store that is down: every operation fails fast as transient, and nothing is left.
#[tokio::test]
async fn s3_down_is_unavailable_quickly() {
    let store = BlobStore::S3(
        S3Store::new(&s3_settings(
            format!("http://127.0.0.1:{}", closed_port()),
            "cc-down",
        ))
        .expect("the S3 store"),
    );
    let k = key("down/x");
    let started = Instant::now();
    let small = store
        .put(&k, body(&data(1000, 10), 100), 50 * MIB as u64)
        .await;
    let large = store
        .put(&k, body(&data(6 * MIB, 11), 64 * 1024), 50 * MIB as u64)
        .await;
    let got = store.get(&k, None).await.map(|r| r.content_length);
    let ranged = store
        .get(&k, Some(ByteRange::Suffix { length: 0 }))
        .await
        .map(|r| r.content_length);
    let head = store.head(&k).await;
    let delete = store.delete(&k).await;
    let elapsed = started.elapsed();
    for (what, error) in [
        ("put", small.err()),
        ("multipart put", large.err()),
        ("get", got.err()),
        ("ranged get", ranged.err()),
        ("head", head.err()),
        ("delete", delete.err()),
    ] {
        match error {
            Some(error @ BlobError::Unavailable(_)) => assert!(error.is_transient()),
            other => panic!("{what}: {other:?}"),
        }
    }
    // Six operations, two attempts each, against a refused connection.
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

/// A missing bucket is a misconfiguration, not a missing object, and not worth a retry.
#[tokio::test]
async fn s3_missing_bucket_is_not_not_found() {
    let other = BlobStore::S3(
        S3Store::new(&s3_settings(s3_endpoint(), "cc-no-such-bucket")).expect("the S3 store"),
    );
    match other.get(&key("x"), None).await {
        Err(error @ BlobError::Other(_)) => assert!(!error.is_transient()),
        result => panic!("{:?}", result.map(|r| r.content_length)),
    }
    let put = other.put(&key("x"), body(b"abc", 1), 10).await;
    assert!(matches!(put, Err(BlobError::Other(_))), "{put:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn disk_files_are_not_executable_and_live_under_the_root() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("store");
    let store =
        BlobStore::Disk(commcenter_shared::platform::blob::DiskStore::new(&root).expect("store"));
    store
        .put(&key("x/y/z.bin"), body(b"#!/bin/sh\n", 3), 100)
        .await
        .expect("put");
    let path = root.join("x/y/z.bin");
    let mode = std::fs::metadata(&path)
        .expect("the file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "mode {mode:o}");
    assert_eq!(std::fs::read(&path).expect("read"), b"#!/bin/sh\n");
}
