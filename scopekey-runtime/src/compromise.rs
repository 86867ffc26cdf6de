//! Compromise response: plaintext keys found in the wild are revoked at once.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::key::{KeyId, hint};
use crate::lifecycle::{Actor, ScopeKey};
use crate::model::event_type;
use crate::store::EventQuery;

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
    /// Successors the reported key minted by rotating itself (and theirs,
    /// down the lineage), revoked with it: whoever held the leaked key could
    /// have made them. Successors made by another key, by the system or by
    /// automatic rotation (delivered to the holder's webhook) are left alone.
    #[serde(default)]
    pub revoked_successors: Vec<KeyId>,
}

impl ScopeKey {
    /// Revokes every live key in a report of plaintext keys found in the
    /// wild (a secret scanner's hits, a leak), with reason `compromised` and
    /// a `key.compromised` audit event each. Malformed entries are reported,
    /// not fatal.
    ///
    /// A leaked key may have rotated itself (any key may), so that its
    /// successor outlives the leak: the successors it minted itself, and
    /// theirs in turn, are revoked with it, the same way, and listed in
    /// [`CompromiseResult::revoked_successors`] (also when the reported key
    /// was already revoked or had expired at the end of its grace). The walk
    /// down the lineage stops at a successor another key or the system made:
    /// its plaintext never went to whoever held the leaked key. Keys the
    /// leaked key created outright are not revoked; the audit log lists them
    /// (`key.created` events whose `actor_key_id` is its id).
    ///
    /// Keys are handled in order. A store failure partway through ends the
    /// call with an error, the keys before it already revoked: a report is
    /// safe to send again (those then read `already_revoked`).
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
            // A byte order mark is no part of a key (a report saved by
            // Notepad starts with one).
            let presented = presented.trim().trim_start_matches('\u{feff}');
            if format.parse(presented).is_err() {
                out.push(CompromiseResult {
                    index,
                    status: CompromiseStatus::Malformed,
                    key_id: None,
                    hint: None,
                    revoked_successors: Vec::new(),
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
                    revoked_successors: Vec::new(),
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
            let revoked_successors = self.revoke_self_minted(record.id, actor, &details).await?;
            out.push(CompromiseResult {
                index,
                status,
                key_id: Some(record.id),
                hint: shown,
                revoked_successors,
            });
        }
        Ok(out)
    }

    /// Walks a leaked key's lineage down while each successor was minted by
    /// its parent itself (the `key.rotated` event's actor is the parent),
    /// revoking the live ones; the successors revoked now.
    async fn revoke_self_minted(
        &self,
        leaked: KeyId,
        actor: Actor<'_>,
        details: &serde_json::Value,
    ) -> Result<Vec<KeyId>, Error> {
        let mut revoked = Vec::new();
        let mut parent = leaked;
        // A lineage is acyclic (each successor is newer than its parent);
        // the bound only guards against a store that says otherwise.
        for _ in 0..10_000 {
            let Some(successor) = self
                .store()
                .successor(parent)
                .await
                .map_err(Error::Unavailable)?
            else {
                break;
            };
            if self.rotation_actor(successor.id).await? != Some(parent) {
                break;
            }
            if successor.revoked_at.is_none() {
                let mut details = details.clone();
                details["leaked_key_id"] = serde_json::json!(leaked);
                let (_, now_revoked) = self
                    .revoke_as(
                        successor.id,
                        Some("compromised"),
                        actor,
                        event_type::KEY_COMPROMISED,
                        details,
                    )
                    .await?;
                if now_revoked {
                    revoked.push(successor.id);
                }
            }
            parent = successor.id;
        }
        Ok(revoked)
    }

    /// The key whose authority made this successor (the actor of the
    /// `key.rotated` event that created it): `None` for the system, an
    /// automatic rotation, or no such event.
    async fn rotation_actor(&self, successor: KeyId) -> Result<Option<KeyId>, Error> {
        let mut query = EventQuery {
            key_id: Some(successor),
            cursor: None,
            limit: 500,
        };
        loop {
            let page = self
                .store()
                .list_events(&query)
                .await
                .map_err(Error::Unavailable)?;
            if let Some(event) = page.iter().find(|e| {
                e.kind == event_type::KEY_ROTATED
                    && e.details["successor_key_id"] == serde_json::json!(successor)
            }) {
                return Ok(event.actor_key_id);
            }
            match page.last() {
                Some(last) if page.len() == query.limit as usize => {
                    query.cursor = Some(crate::store::Cursor::after(last.at, last.id));
                }
                _ => return Ok(None),
            }
        }
    }
}
