//! What the provider clients need to be told: where each API is, the credentials, how
//! long a call may take. The settings tree (`commcenter_shared::platform::settings`)
//! reads them from the environment with every other setting.

use std::{fmt, time::Duration};

/// A value that must never be printed: `Debug` and `Display` show a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// RingCentral (SMS, MMS, call log, webhooks). Configured when the client id, secret
/// and JWT are all set; until then the SMS and call-log endpoints answer 503.
#[derive(Debug, Clone)]
pub struct RingCentralSettings {
    /// `RINGCENTRAL_SERVER_URL`: the API's base URL (default RingCentral's production
    /// host; the fake provider server's address in development and tests).
    pub server_url: String,
    /// `RINGCENTRAL_CLIENT_ID`, `RINGCENTRAL_CLIENT_SECRET`: the app's credentials.
    pub client_id: String,
    pub client_secret: Secret,
    /// `RINGCENTRAL_JWT`: the user's JWT credential for the JWT-bearer grant.
    pub jwt: Secret,
    /// `RINGCENTRAL_FROM_NUMBER`: the SMS-enabled number messages go from (E.164).
    pub from_number: String,
    /// `RINGCENTRAL_WEBHOOK_TOKEN`: the verification token our webhook subscription was
    /// created with; a notification without it is refused.
    pub webhook_token: Secret,
    /// `RINGCENTRAL_TIMEOUT_MS`: one HTTP call's limit (connect to last byte).
    pub timeout: Duration,
    /// `CALL_LOG_IMPORT_SECS`: how often workers import the call log (0: never).
    pub call_log_import_every: Option<Duration>,
}

impl RingCentralSettings {
    pub fn configured(&self) -> bool {
        !self.client_id.is_empty()
            && !self.client_secret.expose().is_empty()
            && !self.jwt.expose().is_empty()
    }

    /// The number SMS can go from, when RingCentral is configured and one is set.
    pub fn sms_from(&self) -> Option<&str> {
        (self.configured() && !self.from_number.is_empty()).then_some(self.from_number.as_str())
    }
}

/// Gmail (email). Configured when the client id, secret and refresh token are set.
#[derive(Debug, Clone)]
pub struct GmailSettings {
    /// `GOOGLE_CLIENT_ID`, `GOOGLE_CLIENT_SECRET`: the OAuth client.
    pub client_id: String,
    pub client_secret: Secret,
    /// `GOOGLE_TOKEN_URL`: the OAuth token endpoint (default Google's).
    pub token_url: String,
    /// `GMAIL_API_URL`: the Gmail API's base URL (default Google's).
    pub api_url: String,
    /// `GMAIL_REFRESH_TOKEN`: the mailbox's refresh token.
    pub refresh_token: Secret,
    /// `GMAIL_SENDER`: the address mail goes from (the mailbox's own).
    pub sender: String,
    /// `GMAIL_TIMEOUT_MS`: one HTTP call's limit (connect to last byte).
    pub timeout: Duration,
    /// `GMAIL_POLL_SECS` (default 30): how often workers read new mail (0: never).
    pub poll_every: Option<Duration>,
}

impl GmailSettings {
    pub fn configured(&self) -> bool {
        !self.client_id.is_empty()
            && !self.client_secret.expose().is_empty()
            && !self.refresh_token.expose().is_empty()
    }

    /// The mailbox email can go from, when Gmail is configured and one is set.
    pub fn email_from(&self) -> Option<&str> {
        (self.configured() && !self.sender.is_empty()).then_some(self.sender.as_str())
    }
}
