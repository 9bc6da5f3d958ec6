//! Message templates: text with `{{placeholders}}`, stored in versions, rendered when a
//! message is accepted (`template_id` + `variables` instead of `message`).
//!
//! A placeholder is `{{name}}` (spaces inside the braces allowed), the name being a
//! letter or `_` followed by letters, digits, `_` or `.`. Anything else that opens with
//! `{{` is malformed and refused when the template is written, so a stored template
//! always renders.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Invalid;

/// One piece of a template: literal text or a placeholder's name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Splits `text` into literal text and placeholders; a malformed placeholder is
/// refused with where it starts.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, Invalid> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let at = text.len() - rest.len() + open;
        let snippet: String = rest[open..].chars().take(20).collect();
        let close = after.find("}}").ok_or_else(|| {
            Invalid(format!(
                "the placeholder at character {} ({snippet:?}) is not closed with }}}}",
                text[..at].chars().count()
            ))
        })?;
        let name = after[..close].trim();
        if !valid_name(name) || after[..close].contains('{') {
            return Err(Invalid(format!(
                "the placeholder at character {} ({snippet:?}) must be {{{{name}}}} with a name of letters, digits, _ and .",
                text[..at].chars().count()
            )));
        }
        out.push(Piece::Placeholder(name));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The placeholders of `texts`, each once, in order of first appearance.
pub fn placeholders<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<String>, Invalid> {
    let mut names: Vec<String> = Vec::new();
    for text in texts {
        for piece in pieces(text)? {
            if let Piece::Placeholder(name) = piece
                && !names.iter().any(|n| n == name)
            {
                names.push(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// Every placeholder without a value, in order.
    #[error("variables missing: {}", .0.join(", "))]
    Missing(Vec<String>),
    /// A value that is not text, a number or a boolean.
    #[error("variables.{0}: must be a string, a number or a boolean")]
    NotText(String),
    #[error(transparent)]
    Malformed(#[from] Invalid),
}

/// Fills the placeholders of `text` from `variables`. Values are inserted as they are:
/// the text is a message, never markup.
pub fn render(text: &str, variables: &BTreeMap<String, Value>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    for piece in pieces(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(name) => match variables.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                Some(_) => return Err(RenderError::NotText(name.to_owned())),
                None => {
                    if !missing.iter().any(|m| m == name) {
                        missing.push(name.to_owned());
                    }
                }
            },
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(RenderError::Missing(missing))
    }
}

/// A template's text and subject, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub message: String,
    pub subject: Option<String>,
}

/// Renders the content and the subject; every variable missing from either is named,
/// at once.
pub fn render_template(
    content: &str,
    subject: Option<&str>,
    variables: &BTreeMap<String, Value>,
) -> Result<Rendered, RenderError> {
    let missing: Vec<String> = placeholders(subject.into_iter().chain([content]))?
        .into_iter()
        .filter(|name| !variables.contains_key(name))
        .collect();
    if !missing.is_empty() {
        return Err(RenderError::Missing(missing));
    }
    Ok(Rendered {
        message: render(content, variables)?,
        subject: subject.map(|s| render(s, variables)).transpose()?,
    })
}

/// A template's current version.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub template_type: String,
    pub category: Option<String>,
    pub subject: Option<String>,
    pub content: String,
    pub variables: Value,
    pub version: i32,
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const TEMPLATE_COLUMNS: &str = "id, name, type, category, subject, content, variables, version,
    active, created_by, created_at, updated_by, updated_at";

/// A template's text, as written by staff.
#[derive(Debug, Clone)]
pub struct TemplateText<'a> {
    pub name: &'a str,
    pub template_type: &'a str,
    pub category: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub content: &'a str,
    pub variables: &'a [String],
}

/// Is this the active-name constraint refusing a second template of the same name?
pub fn is_duplicate_name(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .is_some_and(|c| c == "message_templates_active_name")
}

/// `sql` with the template's id, text and author bound as `$1` to `$8`.
fn with_text<'q>(
    sql: &'q str,
    id: Uuid,
    t: &TemplateText<'q>,
    by: &'q str,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, Template, sqlx::postgres::PgArguments> {
    sqlx::query_as(sql)
        .bind(id)
        .bind(t.name)
        .bind(t.template_type)
        .bind(t.category)
        .bind(t.subject)
        .bind(t.content)
        .bind(sqlx::types::Json(t.variables))
        .bind(by)
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    t: &TemplateText<'_>,
    by: &str,
) -> sqlx::Result<Template> {
    let sql = format!(
        "INSERT INTO message_templates (id, name, type, category, subject, content, variables, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING {TEMPLATE_COLUMNS}"
    );
    let template = with_text(&sql, id, t, by).fetch_one(&mut *conn).await?;
    record_version(conn, &template, by).await?;
    Ok(template)
}

/// Writes the new text as the next version; `None` when there is no active template
/// `id` to edit.
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    t: &TemplateText<'_>,
    by: &str,
) -> sqlx::Result<Option<Template>> {
    let sql = format!(
        "UPDATE message_templates SET name = $2, type = $3, category = $4, subject = $5,
             content = $6, variables = $7, version = version + 1, updated_by = $8, updated_at = now()
         WHERE id = $1 AND active
         RETURNING {TEMPLATE_COLUMNS}"
    );
    let template = with_text(&sql, id, t, by)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(template) = &template {
        record_version(conn, template, by).await?;
    }
    Ok(template)
}

async fn record_version(conn: &mut PgConnection, t: &Template, by: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO message_template_versions (template_id, version, name, subject, content, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id)
    .bind(t.version)
    .bind(&t.name)
    .bind(&t.subject)
    .bind(&t.content)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn find(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Template>> {
    sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM message_templates WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Deactivates the template (kept for the messages that name it); whether it was active.
pub async fn deactivate(conn: &mut PgConnection, id: Uuid, by: &str) -> sqlx::Result<bool> {
    let changed = sqlx::query(
        "UPDATE message_templates SET active = false, updated_by = $2, updated_at = now()
         WHERE id = $1 AND active",
    )
    .bind(id)
    .bind(by)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

#[derive(Debug, Clone, Default)]
pub struct TemplateFilter<'a> {
    pub template_type: Option<&'a str>,
    pub category: Option<&'a str>,
    /// `None`: both active and inactive.
    pub active: Option<bool>,
}

/// By name; at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    f: &TemplateFilter<'_>,
    limit: i64,
) -> sqlx::Result<Vec<Template>> {
    sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM message_templates
         WHERE ($1::text IS NULL OR type = $1)
           AND ($2::text IS NULL OR category = $2)
           AND ($3::boolean IS NULL OR active = $3)
         ORDER BY lower(name), created_at DESC, id
         LIMIT $4"
    ))
    .bind(f.template_type)
    .bind(f.category)
    .bind(f.active)
    .bind(limit)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn placeholders_are_found_once_in_order() {
        let found =
            placeholders(["Hi {{name}}, {{ when }} at {{name}}", "Re: {{job.id}}"]).unwrap();
        assert_eq!(found, ["name", "when", "job.id"]);
        assert!(
            placeholders(["no placeholders, just } and { braces"])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_placeholders_are_named() {
        for bad in [
            "Hi {{name",
            "Hi {{}}",
            "Hi {{first name}}",
            "{{1st}}",
            "{{a{{b}}",
        ] {
            let error = placeholders([bad]).unwrap_err().0;
            assert!(error.contains("placeholder at character"), "{bad}: {error}");
        }
        assert!(
            placeholders(["Hi {{name"])
                .unwrap_err()
                .0
                .contains("not closed")
        );
    }

    #[test]
    fn rendering_fills_values_and_names_every_missing_one() {
        let text = "Hi {{name}}, we come {{day}} at {{hour}}. {{ok}}";
        assert_eq!(
            render(
                text,
                &vars(json!({"name": "Ann", "day": "Monday", "hour": 9, "ok": true}))
            )
            .unwrap(),
            "Hi Ann, we come Monday at 9. true"
        );
        assert_eq!(
            render(text, &vars(json!({"name": "Ann"}))).unwrap_err(),
            RenderError::Missing(vec!["day".into(), "hour".into(), "ok".into()])
        );
        assert_eq!(
            render("{{a}}", &vars(json!({"a": {"x": 1}}))).unwrap_err(),
            RenderError::NotText("a".into())
        );
        // The subject's and the text's missing variables together.
        assert_eq!(
            render_template("{{a}} {{b}}", Some("{{c}}"), &vars(json!({"b": 1}))).unwrap_err(),
            RenderError::Missing(vec!["c".into(), "a".into()])
        );
        // Values are inserted as they are, never read as placeholders themselves.
        assert_eq!(
            render("{{a}}", &vars(json!({"a": "{{b}}"}))).unwrap(),
            "{{b}}"
        );
    }
}
