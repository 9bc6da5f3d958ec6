//! `POST /api/integrations/ringcentral/sms`: an SMS, or an MMS when files go with it.

use std::collections::BTreeMap;

use axum::{extract::State, http::HeaderMap};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use commcenter_shared::{
    domain::contact::PhoneNumber,
    domain::store::FileRecord,
    domain::{CommunicationType, CustomerId, is_blank},
};

use super::{Answer, Refusal, invalid, ringcentral_ready};
use crate::{
    accept::{Acceptance, Channel, NewCommunication, TemplateChoice, begin_or_repeat},
    auth::Caller,
    body::JsonBody,
    error::ApiError,
    state::AppState,
};
use commcenter_shared::domain::text;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSmsRequest {
    pub customer_id: CustomerId,
    /// The project (a job at the customer\'s site) it belongs to.
    #[serde(default)]
    pub project_id: Option<Uuid>,
    pub to: String,
    /// May be left out for an MMS of files alone, or when a template is chosen.
    #[serde(default, alias = "content")]
    pub message: Option<String>,
    #[serde(default)]
    pub attachments: Vec<Uuid>,
    /// Rendered instead of `message`.
    #[serde(default)]
    pub template_id: Option<Uuid>,
    #[serde(default)]
    pub variables: Option<BTreeMap<String, Value>>,
}

/// RingCentral's limits on one SMS or MMS.
const SMS_MAX_CHARS: usize = 1000;
const MMS_MAX_FILES: usize = 10;
const MMS_MAX_BYTES: i64 = 1_500_000;
/// The MMS content types RingCentral takes, among those our uploads can be. (It also
/// takes SVG, vCard, ZIP and gzip, which uploads refuse.) WebP, HEIC, MOV, WAV, PDF and
/// office documents cannot go by MMS.
const MMS_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/gif",
    "image/tiff",
    "video/3gpp",
    "video/mp4",
    "video/mpeg",
    "video/x-msvideo",
    "audio/mpeg",
    "application/rtf",
];

pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(request): JsonBody<SendSmsRequest>,
) -> Answer {
    caller.ensure_staff()?;
    ringcentral_ready(&state)?;
    let ringcentral = &state.settings.ringcentral;
    let from = PhoneNumber::parse(&ringcentral.from_number, state.settings.contacts.default_phone_region)
        .map_err(|e| {
            Refusal::NotConfigured(format!(
                "RingCentral is not configured here: RINGCENTRAL_FROM_NUMBER is not a number to send from ({e})"
            ))
        })?;
    let to = PhoneNumber::parse(&request.to, state.settings.contacts.default_phone_region)
        .map_err(|e| invalid("to", e))?;
    if request.attachments.len() > MMS_MAX_FILES {
        return Err(invalid(
            "attachments",
            format!("RingCentral takes at most {MMS_MAX_FILES} files per MMS"),
        )
        .into());
    }
    let mut acceptance = begin_or_repeat!(Acceptance::begin(
        &state,
        &caller,
        &headers,
        "POST /api/integrations/ringcentral/sms",
        &request
    ));
    let project_id = acceptance
        .project(&caller, &request.customer_id, request.project_id)
        .await?;
    let has_files = !request.attachments.is_empty();
    let composed = acceptance
        .compose(
            CommunicationType::Sms,
            request.message.as_deref(),
            &TemplateChoice::of(request.template_id, &request.variables),
            has_files,
        )
        .await?;
    sms_text(&composed.message, has_files)?;
    let files = acceptance
        .files(&request.customer_id, &request.attachments)
        .await?;
    check_mms(&files)?;
    let mut extra = Map::new();
    extra.insert("segments".into(), json!(segments(&composed.message)));
    Ok(acceptance
        .record(
            &state,
            &caller,
            NewCommunication::outbound(
                &request.customer_id,
                project_id,
                &composed,
                &files,
                Channel::Sms {
                    to: to.as_str(),
                    from: from.as_str(),
                },
            ),
            extra,
        )
        .await?)
}

/// How many SMS segments a text goes as: GSM-7 text takes 160 characters in one, 153 a
/// segment when split (the characters of its extension table count twice); anything
/// else goes as UCS-2, 70 in one and 67 a segment (counted in UTF-16 units). An MMS
/// with no text is no SMS segment at all.
pub(crate) fn segments(text: &str) -> usize {
    const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const GSM_EXTENDED: &str = "^{}\\[~]|€\u{000C}";
    if text.is_empty() {
        return 0;
    }
    let gsm_units: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM_BASIC.contains(c) {
                Some(1)
            } else if GSM_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, each) = match gsm_units {
        Some(units) => (units, 160, 153),
        None => (text.encode_utf16().count(), 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(each)
    }
}

/// The text of an SMS: up to RingCentral's 1,000 characters, empty only when files go
/// with it (an MMS may be pictures alone).
fn sms_text(raw: &str, has_files: bool) -> Result<&str, ApiError> {
    if is_blank(raw) && !(raw.is_empty() && has_files) {
        return Err(invalid(
            "message",
            "must not be blank (it may be empty only when attachments are sent)",
        ));
    }
    let chars = raw.chars().count();
    if chars > SMS_MAX_CHARS {
        return Err(invalid(
            "message",
            format!("{chars} characters is over RingCentral's SMS limit of {SMS_MAX_CHARS}"),
        ));
    }
    if let Some(why) = text::control_refusal(raw) {
        return Err(invalid("message", why));
    }
    Ok(raw)
}

/// What RingCentral would refuse of an MMS's files. Images count for nothing here: the
/// worker recompresses them to fit; every other file goes as it is and must fit now.
fn check_mms(files: &[FileRecord]) -> Result<(), ApiError> {
    if let Some(file) = files
        .iter()
        .find(|f| !MMS_TYPES.contains(&f.file_type.as_str()))
    {
        return Err(invalid(
            "attachments",
            format!(
                "file {} ({}, {}) cannot be sent by MMS: RingCentral takes JPEG, PNG, BMP, GIF, TIFF, 3GP, MP4, MPEG, AVI, MP3 and RTF",
                file.id, file.original_name, file.file_type
            ),
        ));
    }
    let as_they_are: i64 = files
        .iter()
        .filter(|f| f.file_category != "images")
        .map(|f| f.file_size)
        .sum();
    if as_they_are > MMS_MAX_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "attachments: {as_they_are} bytes of files other than images is over RingCentral's MMS limit of 1.5 MB ({MMS_MAX_BYTES} bytes); images are recompressed to fit, other files are not"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_text_is_bounded_in_characters_and_empty_only_with_files() {
        assert!(sms_text("hi", false).is_ok());
        assert!(sms_text(&"é".repeat(SMS_MAX_CHARS), false).is_ok());
        let error = sms_text(&"é".repeat(SMS_MAX_CHARS + 1), false).unwrap_err();
        assert!(error.to_string().contains("1001 characters"), "{error}");
        assert!(sms_text("", true).is_ok());
        assert!(sms_text("", false).is_err());
        assert!(sms_text("   ", true).is_err());
        assert!(sms_text("\u{200B}", false).is_err());
        assert!(sms_text("a\0b", false).is_err());
    }

    #[test]
    fn segments_count_gsm_and_ucs2_texts() {
        assert_eq!(segments(""), 0);
        assert_eq!(segments("Hello"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // The extension table's characters take two places.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // One character outside GSM-7 makes the whole text UCS-2.
        assert_eq!(segments(&format!("{}✓", "a".repeat(69))), 1);
        assert_eq!(segments(&format!("{}✓", "a".repeat(70))), 2);
        // Emoji are two UTF-16 units each.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }
}
