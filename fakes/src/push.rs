//! A fake Web Push service (RFC 8030), with the browsers subscribed to it: it checks a
//! push as a real one does (`aes128gcm`, a `TTL`, a VAPID token signed by the key it
//! names, for this origin, not expired), decrypts the payload with the browser's own
//! keys as the browser would (RFC 8291), records it, and answers as told: 201, or a
//! scripted 404, 410, 413, 429 (with `Retry-After`) or 5xx.
//!
//! `browser(name)` makes a browser's key pair and auth secret and answers the
//! `PushSubscription` a page would hand over (`endpoint`, `keys.p256dh`, `keys.auth`);
//! `forget(name)` makes its endpoint answer 410, as an unsubscribed one does.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use aes_gcm::{Aes128Gcm, KeyInit as _, aead::Aead as _};
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use p256::{
    PublicKey, SecretKey,
    ecdsa::{Signature, VerifyingKey, signature::Verifier as _},
    elliptic_curve::sec1::ToEncodedPoint as _,
};
use sha2::Sha256;

use crate::server::{Observer, Server};

/// What a browser hands the application server.
#[derive(Debug, Clone)]
pub struct Browser {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// A push the service accepted, decrypted.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub browser: String,
    pub payload: Vec<u8>,
    pub ttl: u64,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The VAPID token's `sub` and the public key it was verified with (`k=`).
    pub subject: String,
    pub vapid_key: String,
}

struct Keys {
    private: SecretKey,
    auth: [u8; 16],
    forgotten: bool,
}

#[derive(Default)]
struct Service {
    origin: String,
    browsers: Mutex<HashMap<String, Keys>>,
    answers: Mutex<VecDeque<(u16, Option<u64>)>>,
    received: Mutex<Vec<Delivery>>,
}

/// A running fake push service. Stops when dropped.
pub struct FakePush {
    state: Arc<Service>,
    server: Server,
}

impl FakePush {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = Server::bind(None).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Service {
            origin: format!("http://{addr}"),
            ..Default::default()
        });
        let router = Router::new()
            .route("/push/{browser}", post(receive))
            .with_state(state.clone());
        let observer = Arc::new(Observer::new(std::time::Duration::ZERO));
        let server = Server::start(listener, router, observer)?;
        Ok(Self { state, server })
    }

    /// `http://127.0.0.1:{port}`: the origin to allow (`PUSH_ENDPOINT_ALLOW`).
    pub fn url(&self) -> String {
        self.state.origin.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A new browser subscribed here, with keys of its own.
    pub fn browser(&self, name: &str) -> Browser {
        let private = loop {
            if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break key;
            }
        };
        let auth = rand::random::<[u8; 16]>();
        let browser = Browser {
            endpoint: format!("{}/push/{name}", self.state.origin),
            p256dh: URL_SAFE_NO_PAD.encode(private.public_key().to_encoded_point(false).as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        };
        lock(&self.state.browsers).insert(
            name.to_owned(),
            Keys {
                private,
                auth,
                forgotten: false,
            },
        );
        browser
    }

    /// The browser unsubscribed: its endpoint answers 410 from now on.
    pub fn forget(&self, name: &str) {
        if let Some(keys) = lock(&self.state.browsers).get_mut(name) {
            keys.forgotten = true;
        }
    }

    /// The next `times` pushes get `status` (with `Retry-After: retry_after`), unread.
    pub fn answer_next(&self, status: u16, retry_after: Option<u64>, times: usize) {
        lock(&self.state.answers).extend(std::iter::repeat_n((status, retry_after), times));
    }

    /// Every push accepted so far, decrypted.
    pub fn received(&self) -> Vec<Delivery> {
        lock(&self.state.received).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, why.to_owned()).into_response()
}

async fn receive(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some((status, retry_after)) = lock(&service.answers).pop_front() {
        let mut answer = refuse(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted",
        );
        if let Some(after) = retry_after {
            answer.headers_mut().insert(
                header::RETRY_AFTER,
                after.to_string().parse().expect("digits"),
            );
        }
        return answer;
    }
    let (subject, vapid_key) = match check_vapid(text("authorization"), &service.origin) {
        Ok(found) => found,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    let Some(ttl) = text("ttl").and_then(|t| t.parse::<u64>().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "a TTL header is required");
    };
    if text("content-encoding") != Some("aes128gcm") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Content-Encoding must be aes128gcm",
        );
    }
    if body.len() > 4096 {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "at most 4096 bytes");
    }
    let payload = {
        let browsers = lock(&service.browsers);
        match browsers.get(&name) {
            None => return refuse(StatusCode::NOT_FOUND, "no such subscription"),
            Some(keys) if keys.forgotten => return refuse(StatusCode::GONE, "unsubscribed"),
            Some(keys) => match decrypt(&body, keys) {
                Ok(payload) => payload,
                Err(why) => return refuse(StatusCode::BAD_REQUEST, &why),
            },
        }
    };
    lock(&service.received).push(Delivery {
        browser: name,
        payload,
        ttl,
        urgency: text("urgency").map(str::to_owned),
        topic: text("topic").map(str::to_owned),
        subject,
        vapid_key,
    });
    StatusCode::CREATED.into_response()
}

/// `vapid t=<JWT>, k=<key>`: the JWT signed (ES256) by `k`, for this origin, not
/// expired, not valid for more than 24 hours. Answers its subject and the key.
fn check_vapid(header: Option<&str>, origin: &str) -> Result<(String, String), String> {
    let rest = header
        .and_then(|h| h.strip_prefix("vapid "))
        .ok_or("Authorization must be `vapid t=…, k=…`")?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => token = Some(value),
            Some(("k", value)) => key = Some(value),
            _ => {}
        }
    }
    let (token, key) = token.zip(key).ok_or("Authorization needs t= and k=")?;
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("not base64url: {e}"))
    };
    let verifier =
        VerifyingKey::from_sec1_bytes(&decode(key)?).map_err(|_| "k is not a P-256 key")?;
    let (signed, signature) = token.rsplit_once('.').ok_or("the token is not a JWT")?;
    let signature =
        Signature::from_slice(&decode(signature)?).map_err(|_| "a bad ES256 signature")?;
    verifier
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "the token's signature does not match k")?;
    let claims: serde_json::Value = signed
        .split_once('.')
        .map(|(_, claims)| decode(claims))
        .transpose()?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or("the token's claims are not JSON")?;
    if claims["aud"] != origin {
        return Err(format!("the token is for {}, not {origin}", claims["aud"]));
    }
    let now = chrono::Utc::now().timestamp();
    let exp = claims["exp"].as_i64().ok_or("the token has no exp")?;
    if exp <= now || exp > now + 24 * 3600 {
        return Err("the token is expired or valid for more than 24 hours".into());
    }
    let subject = claims["sub"].as_str().unwrap_or_default().to_owned();
    if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
        return Err("the token's sub is not a mailto: or https: URL".into());
    }
    Ok((subject, key.to_owned()))
}

/// What the browser does with a push: RFC 8291 §3 from the receiving side.
fn decrypt(body: &[u8], keys: &Keys) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err("too short for an aes128gcm header".into());
    }
    let (salt, rest) = body.split_at(16);
    let id_len = usize::from(rest[4]);
    let (sender, sealed) = rest[5..]
        .split_at_checked(id_len)
        .ok_or("the key id is cut short")?;
    let sender = PublicKey::from_sec1_bytes(sender).map_err(|_| "the key id is not a P-256 key")?;
    let shared = p256::ecdh::diffie_hellman(keys.private.to_nonzero_scalar(), sender.as_affine());
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(keys.private.public_key().to_encoded_point(false).as_bytes());
    info.extend_from_slice(sender.to_encoded_point(false).as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&keys.auth), shared.raw_secret_bytes())
        .expand(&info, &mut ikm)
        .map_err(|_| "hkdf")?;
    let content = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let (mut key, mut nonce) = ([0u8; 16], [0u8; 12]);
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut key)
        .map_err(|_| "hkdf")?;
    content
        .expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| "hkdf")?;
    let mut record = Aes128Gcm::new(&key.into())
        .decrypt(&nonce.into(), sealed)
        .map_err(|_| "the payload does not decrypt with this browser's keys")?;
    // Padding zeros, then the delimiter: 2 for the last record.
    while record.last() == Some(&0) {
        record.pop();
    }
    if record.pop() != Some(2) {
        return Err("the record does not end with the last record's delimiter".into());
    }
    Ok(record)
}
