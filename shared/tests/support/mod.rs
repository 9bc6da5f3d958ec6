//! Test support for the blob store: an S3-compatible server on loopback (moto), and a
//! store per test (a temporary directory, or a bucket of its own on that server).

#![allow(dead_code)] // each test binary uses its own part of it

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::Duration,
};

use bytes::Bytes;
use commcenter_shared::{
    platform::blob::{BlobStore, DiskStore, S3Store},
    platform::settings::{S3Settings, Secret},
};
use futures_util::{Stream, StreamExt as _, stream};
use rusty_s3::{
    S3Action,
    actions::{CreateBucket, GetObject, ListObjectsV2},
};

/// How long the test's own signed requests are valid.
const SIGNED_FOR: Duration = Duration::from_secs(600);

/// moto 5.2.1 and older answer CompleteMultipartUpload with a root element S3 clients
/// refuse (moto issue 10055); 5.2.2 fixed it.
/// `scripts/test.sh` installs a pinned moto into a virtualenv and names its Python in
/// `MOTO_PYTHON`; without it, the system's `python3` is tried.
pub const INSTALL: &str = "scripts/test.sh (it installs moto into target/test-venv), or python3 -m pip install 'moto[server]>=5.2.2,<6'";

/// moto's S3 in a Python child (`MOTO_PYTHON`, else `python3`), one per test binary, started at first use. It
/// lives as long as this process: it exits when its standard input closes, which the
/// kernel does when this process ends however it ends, so no server outlives a run.
struct Moto {
    port: u16,
    _child: Child,
    _stdin: ChildStdin,
}

const MOTO: &str = r#"
import logging, sys
try:
    from moto.server import ThreadedMotoServer
except ImportError as error:
    print("missing", error, flush=True)
    sys.exit(3)
import moto
if tuple(int(p) for p in moto.__version__.split(".")[:3] if p.isdigit()) < (5, 2, 2):
    print("missing: moto", moto.__version__, "is too old", flush=True)
    sys.exit(3)
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("ready", server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"#;

fn moto() -> &'static Moto {
    static MOTO_SERVER: OnceLock<Moto> = OnceLock::new();
    MOTO_SERVER.get_or_init(|| {
        let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .args(["-c", MOTO])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} for the S3 test server (moto): {e}; run {INSTALL}")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let port = match line.trim().strip_prefix("ready ") {
            Some(port) => port.parse().expect("moto's port"),
            None if line.starts_with("missing") => {
                let _ = child.kill();
                panic!("moto (the S3-compatible test server) is not installed ({}): run {INSTALL}", line.trim())
            }
            None => {
                let _ = child.kill();
                panic!("moto (the S3-compatible test server) did not start: {line:?}; is it installed? {INSTALL}")
            }
        };
        let stdin = child.stdin.take().expect("piped stdin");
        Moto {
            port,
            _child: child,
            _stdin: stdin,
        }
    })
}

/// The test server's endpoint (started at first use).
pub fn s3_endpoint() -> String {
    format!("http://127.0.0.1:{}", moto().port)
}

/// S3 settings for an endpoint on loopback, with short timeouts. 5 MiB parts, S3's
/// smallest, so a 12 MiB object goes up in three.
pub fn s3_settings(endpoint: String, bucket: &str) -> S3Settings {
    S3Settings {
        bucket: bucket.to_owned(),
        region: "us-east-1".into(),
        access_key_id: Secret::new("test"),
        secret_access_key: Secret::new("test"),
        endpoint: Some(endpoint),
        force_path_style: true,
        part_size: 5 << 20,
        connect_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(30),
        max_attempts: 2,
    }
}

/// A store of one test's own, and what lies behind it.
pub struct Fixture {
    pub store: BlobStore,
    backend: Backend,
}

enum Backend {
    Disk(tempfile::TempDir),
    S3(S3Store),
}

impl Fixture {
    pub fn disk() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = DiskStore::new(dir.path().join("uploads")).expect("disk store");
        Self {
            store: BlobStore::Disk(store),
            backend: Backend::Disk(dir),
        }
    }

    /// A store on a fresh bucket of the test server.
    pub async fn s3() -> Self {
        let endpoint = s3_endpoint();
        let bucket = format!("cc-test-{}", uuid::Uuid::new_v4().simple());
        let store = S3Store::new(&s3_settings(endpoint, &bucket)).expect("the S3 store");
        let (signed_bucket, credentials) = store.signer();
        let action = CreateBucket::new(signed_bucket, credentials);
        // us-east-1 (the test region) takes no CreateBucketConfiguration body.
        reqwest::Client::new()
            .put(action.sign(SIGNED_FOR))
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("creating the test bucket");
        Self {
            store: BlobStore::S3(store.clone()),
            backend: Backend::S3(store),
        }
    }

    /// Everything the backend holds, sorted: every file under the disk store's root
    /// (temporary ones included), or every object and `uploading:<key>` for each
    /// multipart upload under way in the bucket.
    pub async fn contents(&self) -> Vec<String> {
        let mut found = Vec::new();
        match &self.backend {
            Backend::Disk(dir) => {
                let root = dir.path().join("uploads");
                walk(&root, &root, &mut found);
            }
            Backend::S3(store) => {
                let (bucket, credentials) = store.signer();
                let http = reqwest::Client::new();
                let objects = http
                    .get(ListObjectsV2::new(bucket, Some(credentials)).sign(SIGNED_FOR))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .expect("listing the bucket")
                    .text()
                    .await
                    .expect("the listing");
                let objects = ListObjectsV2::parse_response(&objects).expect("a listing");
                found.extend(objects.contents.into_iter().map(|o| o.key));
                // ListMultipartUploads: a GET of the bucket with `?uploads`.
                let mut list_uploads = GetObject::new(bucket, Some(credentials), "");
                list_uploads.query_mut().insert("uploads", "");
                let uploads = http
                    .get(list_uploads.sign(SIGNED_FOR))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .expect("listing multipart uploads")
                    .text()
                    .await
                    .expect("the uploads");
                found.extend(uploads.split("<Upload>").skip(1).filter_map(|upload| {
                    let start = upload.find("<Key>")? + "<Key>".len();
                    let end = upload.find("</Key>")?;
                    Some(format!("uploading:{}", &upload[start..end]))
                }));
            }
        }
        found.sort();
        found
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("reading the store's directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            walk(root, &path, found);
        } else {
            let relative = path.strip_prefix(root).expect("under the root");
            found.push(relative.to_string_lossy().into_owned());
        }
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
    listener.local_addr().expect("its address").port()
}

/// `len` deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `bytes` as a body stream of `chunk`-sized pieces, as a request body arrives.
pub fn body(
    bytes: &[u8],
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunks: Vec<_> = bytes
        .chunks(chunk.max(1))
        .map(Bytes::copy_from_slice)
        .map(Ok)
        .collect();
    stream::iter(chunks)
}

/// A body of `len` zero bytes made as it is read, in 64 KiB chunks sharing one buffer:
/// it costs no memory of its own.
pub fn zeros(len: u64) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![0u8; CHUNK as usize]);
    stream::iter((0..len.div_ceil(CHUNK)).map(move |i| {
        let size = CHUNK.min(len - i * CHUNK) as usize;
        Ok(chunk.slice(..size))
    }))
}

/// Reads a whole blob stream.
pub async fn read_all(
    mut stream: commcenter_shared::platform::blob::BlobStream,
) -> Result<Vec<u8>, commcenter_shared::platform::blob::BlobError> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
