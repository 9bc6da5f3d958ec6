//! What a request carries (its JSON body, query string, path and multipart text) read
//! with rejections in our error shape, naming the field at fault, and the one rule for
//! text PostgreSQL cannot store: a NUL character (`\u0000` in JSON, `%00` in a URL) is
//! a 400 naming where it was, before any handler sees the request.

use axum::{
    body::{Body, Bytes},
    extract::{
        FromRequest, FromRequestParts, MatchedPath, Request,
        multipart::{Field, MultipartError},
        rejection::{BytesRejection, JsonRejection, QueryRejection},
    },
    http::{StatusCode, Uri, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// What the refusal says of a NUL, after the field's name.
const NUL_REFUSED: &str = "contains a NUL character, which cannot be stored";

/// `Json<T>` with our errors: 400 for malformed JSON, 415 for a missing JSON content
/// type, 413 for a body over `MAX_BODY_BYTES`, 422 for a missing or wrong-typed field.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Read once, looked at for NUL, then parsed by axum's `Json` as it came.
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if let Some(field) = nul_in_json(&bytes) {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("{field}: {NUL_REFUSED}"),
            ));
        }
        let mut req = Request::new(Body::from(bytes));
        *req.headers_mut() = headers;
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::Invalid(e.body_text().replace(
                    "Failed to deserialize the JSON body into the target type: ",
                    "",
                )),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request("invalid_json", e.body_text())
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                    "expected a body with Content-Type: application/json".into(),
                ),
                JsonRejection::BytesRejection(e) => body_rejection(e),
                other => ApiError::bad_request("invalid_body", other.body_text()),
            }),
        }
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "the request body is larger than the limit (MAX_BODY_BYTES)".into(),
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// Where a JSON text holds a string (or a key) with NUL, as a path (`members[2].name`),
/// if it does. Only a text that has `\u0000` is parsed for it. (Public for the fuzz
/// target `request_text`.)
pub fn nul_in_json(raw: &[u8]) -> Option<String> {
    if !raw.windows(6).any(|w| w == b"\\u0000") {
        return None;
    }
    let value: Value = serde_json::from_slice(raw).ok()?;
    nul_in_value(&value, String::new())
}

fn nul_in_value(value: &Value, at: String) -> Option<String> {
    let named = |at: &str| {
        if at.is_empty() {
            "the body".to_owned()
        } else {
            at.to_owned()
        }
    };
    match value {
        Value::String(text) => text.contains('\0').then(|| named(&at)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in_value(item, format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let at = if at.is_empty() {
                key.replace('\0', "\\u0000")
            } else {
                format!("{at}.{}", key.replace('\0', "\\u0000"))
            };
            if key.contains('\0') {
                return Some(format!("the key {at}"));
            }
            nul_in_value(item, at)
        }),
        _ => None,
    }
}

/// Why a URL cannot be served, if it holds `%00`: in a query parameter (named) or in a
/// path segment (named by the route's template when it is a parameter).
pub fn nul_in_url(uri: &Uri, route: Option<&MatchedPath>) -> Option<ApiError> {
    let in_query = uri.query().filter(|q| q.contains("%00")).and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(name, value)| name.contains('\0') || value.contains('\0'))
    });
    if let Some((name, _)) = in_query {
        return Some(ApiError::invalid_query(
            &name.replace('\0', "%00"),
            NUL_REFUSED,
        ));
    }
    let segment = uri.path().split('/').position(|s| s.contains("%00"))?;
    let parameter = route
        .and_then(|route| route.as_str().split('/').nth(segment))
        .and_then(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .unwrap_or("the path");
    Some(ApiError::bad_request(
        "invalid_path",
        format!("{parameter}: {NUL_REFUSED}"),
    ))
}

/// A multipart part's text, refused when it holds NUL (400 naming the part).
pub async fn multipart_text(field: Field<'_>) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_owned();
    let text = field.text().await.map_err(multipart_error)?;
    if text.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_multipart",
            format!("{name}: {NUL_REFUSED}"),
        ));
    }
    Ok(text)
}

/// `Query<T>` with our errors: 400 naming the parameter.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(
                    "invalid_query",
                    e.body_text()
                        .replace("Failed to deserialize query string: ", "query string: "),
                )
            })
    }
}

/// A multipart body that cannot be read: 413 past a limit, else 400.
pub fn multipart_error(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(error.body_text())
    } else {
        ApiError::bad_request("invalid_multipart", error.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(uri: &str) -> Option<String> {
        let uri: Uri = uri.parse().unwrap();
        nul_in_url(&uri, None).map(|e| e.to_string())
    }

    #[test]
    fn a_nul_in_a_url_is_named_and_an_escaped_percent_is_not_one() {
        assert!(
            refusal("/api/x?tz=UTC%00&limit=5")
                .unwrap()
                .starts_with("tz: ")
        );
        assert!(refusal("/api/x/a%00b").unwrap().starts_with("the path: "));
        // `%25` is a percent sign: `%2500` is the text "%00", not a NUL.
        assert_eq!(refusal("/api/x/a%2500?q=%2500"), None);
        assert_eq!(refusal("/api/x?q=plain"), None);
    }

    #[test]
    fn a_nul_in_json_is_found_at_any_depth_and_named() {
        let at = |raw: &str| nul_in_json(raw.as_bytes());
        assert_eq!(at(r#"{"a":[{"b":"x\u0000"}]}"#).as_deref(), Some("a[0].b"));
        assert_eq!(at(r#""\u0000""#).as_deref(), Some("the body"));
        // An escaped backslash before "u0000" is text, not a NUL.
        assert_eq!(at(r#"{"a":"\\u0000"}"#), None);
        assert_eq!(at(r#"{"a":"ok"}"#), None);
    }
}
