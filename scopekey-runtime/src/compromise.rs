//! Compromise response: plaintext keys found in the wild are revoked at once.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::key::{KeyId, hint};
use crate::lifecycle::{Actor, ScopeKey};
use crate::model::event_type;

/// The most keys one report may hold.
pub const MAX_REPORT_KEYS: usize = 10_000;

/// What happened to one reported key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompromiseStatus {
    /// It was live and is now revoked (reason `compromised`).
    Revoked,
    /// It was already revoked; nothing changed.
    AlreadyRevoked,
    /// Well formed, but no such key.
    Unknown,
    /// Not a key of this service's format.
    Malformed,
}

/// The result for one reported key: never the plaintext, only id and hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompromiseResult {
    /// Position in the report, from 0.
    pub index: usize,
    /// The outcome.
    pub status: CompromiseStatus,
    /// The key's id, when known.
    pub key_id: Option<KeyId>,
    /// The key's hint, when the input was well formed.
    pub hint: Option<String>,
}

impl ScopeKey {
    /// Revokes every live key in a report of plaintext keys found in the
    /// wild (a secret scanner's hits, a leak), with reason `compromised` and
    /// a `key.compromised` audit event each. Malformed entries are reported,
    /// not fatal.
    pub async fn report_compromised(
        &self,
        keys: &[String],
        source: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<Vec<CompromiseResult>, Error> {
        if keys.len() > MAX_REPORT_KEYS {
            return Err(Error::Invalid(format!(
                "a report holds at most {MAX_REPORT_KEYS} keys"
            )));
        }
        if let Some(s) = source
            && (s.chars().count() > 200 || s.chars().any(char::is_control))
        {
            return Err(Error::Invalid(
                "`source` must be at most 200 characters, without control characters".into(),
            ));
        }
        // The reason is the specification's word alone; where the report
        // came from goes to the audit event.
        let reason = "compromised";
        let details = json!({ "reason": reason, "source": source });
        let format = self.key_format().clone();
        let mut out = Vec::with_capacity(keys.len());
        for (index, presented) in keys.iter().enumerate() {
            let presented = presented.trim();
            if format.parse(presented).is_err() {
                out.push(CompromiseResult {
                    index,
                    status: CompromiseStatus::Malformed,
                    key_id: None,
                    hint: None,
                });
                continue;
            }
            let shown = Some(hint(presented));
            let record = self
                .store()
                .find_by_hash(&format.hash(presented))
                .await
                .map_err(Error::Unavailable)?;
            let Some(record) = record else {
                out.push(CompromiseResult {
                    index,
                    status: CompromiseStatus::Unknown,
                    key_id: None,
                    hint: shown,
                });
                continue;
            };
            let status = if record.revoked_at.is_some() {
                CompromiseStatus::AlreadyRevoked
            } else {
                let kind = event_type::KEY_COMPROMISED;
                let (_, revoked) = self
                    .revoke_as(record.id, Some(reason), actor, kind, details.clone())
                    .await?;
                // A concurrent revocation may have won; report what is true.
                if revoked {
                    CompromiseStatus::Revoked
                } else {
                    CompromiseStatus::AlreadyRevoked
                }
            };
            out.push(CompromiseResult {
                index,
                status,
                key_id: Some(record.id),
                hint: shown,
            });
        }
        Ok(out)
    }
}
