//! What a push request carries: the payload encrypted for one browser (RFC 8291,
//! `aes128gcm` of RFC 8188 in one record), and the VAPID token that names us to the push
//! service (RFC 8292, an ES256 JWT). Only the browser holding the subscription's private
//! key and auth secret can read a payload; the push service sees its size.

use aes_gcm::{Aes128Gcm, KeyInit as _, aead::Aead as _};
use base64::Engine as _;
use hkdf::Hkdf;
use p256::{
    PublicKey, SecretKey,
    ecdsa::{Signature, SigningKey, signature::Signer as _},
    elliptic_curve::sec1::ToEncodedPoint as _,
};
use sha2::Sha256;

use super::{BASE64URL, VapidKey};

/// The record size written in the header. One record holds the whole payload: push
/// services take about 4 KB in all.
const RECORD_SIZE: u32 = 4096;
/// The largest payload one record carries: the record less its tag (16) and the
/// delimiter byte.
pub const MAX_PAYLOAD: usize = RECORD_SIZE as usize - 16 - 1;

/// Why a payload could not be encrypted for a browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncryptError {
    #[error("the subscription's p256dh is not a P-256 public key")]
    BadBrowserKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    BadAuthSecret,
    #[error("the payload has {0} bytes; one push carries at most {MAX_PAYLOAD}")]
    TooLarge(usize),
}

/// The browser's keys, as its `PushSubscription` gave them (base64url).
#[derive(Debug, Clone, Copy)]
pub struct BrowserKeys<'a> {
    pub p256dh: &'a str,
    pub auth: &'a str,
}

/// `payload` encrypted for the browser: the body of the push request, sent with
/// `Content-Encoding: aes128gcm`. A fresh key pair and salt every time.
pub fn encrypt(payload: &[u8], browser: BrowserKeys<'_>) -> Result<Vec<u8>, EncryptError> {
    let ephemeral = VapidKey::generate().secret;
    encrypt_with(payload, browser, &ephemeral, rand::random::<[u8; 16]>())
}

/// RFC 8291 §3, with the sender's key pair and salt given (the RFC's example fixes both).
fn encrypt_with(
    payload: &[u8],
    browser: BrowserKeys<'_>,
    sender: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EncryptError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(EncryptError::TooLarge(payload.len()));
    }
    let browser_public = BASE64URL
        .decode(browser.p256dh)
        .ok()
        .and_then(|bytes| PublicKey::from_sec1_bytes(&bytes).ok())
        .ok_or(EncryptError::BadBrowserKey)?;
    let auth = BASE64URL
        .decode(browser.auth)
        .ok()
        .filter(|auth| auth.len() == 16)
        .ok_or(EncryptError::BadAuthSecret)?;
    let browser_point = browser_public.to_encoded_point(false);
    let sender_point = sender.public_key().to_encoded_point(false);

    // The shared secret, mixed with the browser's auth secret and both public keys.
    let shared = p256::ecdh::diffie_hellman(sender.to_nonzero_scalar(), browser_public.as_affine());
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(browser_point.as_bytes());
    key_info.extend_from_slice(sender_point.as_bytes());
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF-SHA-256 length");

    // The content key and nonce of RFC 8188, from the salt.
    let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let (mut key, mut nonce) = ([0u8; 16], [0u8; 12]);
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut key)
        .expect("16 bytes is a valid HKDF-SHA-256 length");
    content
        .expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF-SHA-256 length");

    // One record, the last: the payload and the delimiter 2, no padding.
    let mut record = payload.to_vec();
    record.push(2);
    let sealed = Aes128Gcm::new(&key.into())
        .encrypt(&nonce.into(), record.as_slice())
        .expect("AES-GCM encrypts any record of this size");

    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(sender_point.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// How long a VAPID token is good for: push services take at most 24 hours.
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

/// The `Authorization` header of a push request to `audience` (the endpoint's origin,
/// `https://host[:port]`): `vapid t=<ES256 JWT>, k=<our public key>`.
pub fn authorization(key: &VapidKey, audience: &str, subject: &str, now: i64) -> String {
    let header = BASE64URL.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
    let claims = serde_json::json!({
        "aud": audience,
        "exp": now + TOKEN_LIFETIME_SECS,
        "sub": subject,
    });
    let claims = BASE64URL.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let signature: Signature = SigningKey::from(&key.secret).sign(signing_input.as_bytes());
    format!(
        "vapid t={signing_input}.{}, k={}",
        BASE64URL.encode(signature.to_bytes()),
        key.public_key()
    )
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::{VerifyingKey, signature::Verifier as _};

    use super::*;

    // RFC 8291, Appendix A: the example's keys, salt and encrypted body.
    const SENDER_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const BROWSER_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn browser() -> BrowserKeys<'static> {
        BrowserKeys {
            p256dh: BROWSER_PUBLIC,
            auth: AUTH,
        }
    }

    #[test]
    fn the_rfc_8291_example_encrypts_to_its_published_body() {
        let sender = VapidKey::parse(SENDER_PRIVATE).unwrap().secret;
        let salt: [u8; 16] = BASE64URL.decode(SALT).unwrap().try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            browser(),
            &sender,
            salt,
        )
        .unwrap();
        assert_eq!(BASE64URL.encode(body), BODY);
    }

    #[test]
    fn each_push_has_its_own_key_and_salt_and_a_bounded_size() {
        let one = encrypt(b"same words", browser()).unwrap();
        let two = encrypt(b"same words", browser()).unwrap();
        assert_ne!(one[..16], two[..16], "a fresh salt");
        assert_ne!(one[21..86], two[21..86], "a fresh sender key");
        assert_eq!(one.len(), 86 + b"same words".len() + 1 + 16);
        assert_eq!(
            encrypt(&[b'x'; MAX_PAYLOAD + 1], browser()),
            Err(EncryptError::TooLarge(MAX_PAYLOAD + 1))
        );
        assert!(encrypt(&[b'x'; MAX_PAYLOAD], browser()).is_ok());
        let broken = BrowserKeys {
            p256dh: BROWSER_PUBLIC,
            auth: "AAAA",
        };
        assert_eq!(encrypt(b"x", broken), Err(EncryptError::BadAuthSecret));
    }

    #[test]
    fn the_vapid_token_is_an_es256_jwt_our_public_key_verifies() {
        let key = VapidKey::generate();
        let header = authorization(
            &key,
            "https://fcm.googleapis.com",
            "mailto:ops@example.com",
            1_000,
        );
        let (token, public) = header
            .strip_prefix("vapid t=")
            .unwrap()
            .split_once(", k=")
            .unwrap();
        assert_eq!(public, key.public_key());
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&BASE64URL.decode(signed.split_once('.').unwrap().1).unwrap())
                .unwrap();
        assert_eq!(claims["aud"], "https://fcm.googleapis.com");
        assert_eq!(claims["exp"], 1_000 + TOKEN_LIFETIME_SECS);
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        let signature = Signature::from_slice(&BASE64URL.decode(signature).unwrap()).unwrap();
        let verifier = VerifyingKey::from(SigningKey::from(&key.secret));
        assert!(verifier.verify(signed.as_bytes(), &signature).is_ok());
    }
}
