//! Compromise response: plaintext keys found in the wild are revoked at once.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::key::{KeyId, hint};
use crate::lifecycle::{Actor, ScopeKey};
use crate::model::{Status, event_type};

/// The most keys one report may hold.
pub const MAX_REPORT_KEYS: usize = 10_000;

/// The most minted keys listed (and revoked) for one report, over all its
/// keys.
pub const MAX_MINTED: usize = 10_000;

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

/// A key minted with a reported key's authority, and its status once the
/// report was handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedKey {
    /// The minted key.
    pub key_id: KeyId,
    /// Its status after the report (`revoked` if the report revoked it, or
    /// it already was).
    pub status: Status,
}

/// How a report revokes what it finds: for whom, with what reason and
/// event details.
struct Revoking<'a, 'b> {
    actor: Actor<'a>,
    reason: &'b str,
    details: &'b serde_json::Value,
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
    /// The keys minted with the reported key's authority, and theirs in
    /// turn: first those it minted, oldest first, then those they minted
    /// (see [`ScopeKey::report_compromised_with`]).
    #[serde(default)]
    pub minted: Vec<MintedKey>,
    /// The reported key's minted keys went on past what the report's limit
    /// left ([`CompromiseOptions::max_minted`] for the whole report, at most
    /// [`MAX_MINTED`]): the list stops there, and so does `revoke_minted`.
    /// With an empty list, the limit was spent by the entries before: report
    /// the key again on its own. Past the limit within one key's own minted
    /// keys (already revoked ones count too), look for the rest in the audit
    /// log (their `actor_key_id`). A key reported twice in one report lists
    /// its minted keys at its first entry only.
    #[serde(default)]
    pub minted_truncated: bool,
}

/// How a compromise report is handled.
#[derive(Debug, Clone, Copy)]
pub struct CompromiseOptions<'a> {
    /// Where the report came from (a scanner's name), recorded in each
    /// `key.compromised` event; at most 200 characters.
    pub source: Option<&'a str>,
    /// Also revoke the keys each reported key minted (see
    /// [`ScopeKey::report_compromised_with`]). Off by default.
    pub revoke_minted: bool,
    /// The most minted keys listed (and revoked) for the whole report, in
    /// the order of its keys; default and upper bound [`MAX_MINTED`].
    pub max_minted: usize,
}

impl Default for CompromiseOptions<'_> {
    fn default() -> Self {
        Self {
            source: None,
            revoke_minted: false,
            max_minted: MAX_MINTED,
        }
    }
}

impl ScopeKey {
    /// Revokes every key in a report of plaintext keys found in the wild (a
    /// secret scanner's hits, a leak) that is not revoked yet — expired
    /// ones too, so that no later change brings them back — with reason
    /// `compromised` and a `key.compromised` audit event each. Malformed
    /// entries are reported, not fatal. The same as
    /// [`report_compromised_with`] with a `source` and `revoke_minted` off.
    ///
    /// [`report_compromised_with`]: Self::report_compromised_with
    pub async fn report_compromised(
        &self,
        keys: &[String],
        source: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<Vec<CompromiseResult>, Error> {
        let options = CompromiseOptions {
            source,
            ..CompromiseOptions::default()
        };
        self.report_compromised_with(keys, options, actor).await
    }

    /// [`report_compromised`](Self::report_compromised), with options.
    ///
    /// Whoever held a leaked key could use its authority to mint others: any
    /// key may rotate itself, and a key with `api_keys:write` may create keys
    /// and rotate others its scopes cover, receiving each new plaintext. Each result lists
    /// those keys in [`CompromiseResult::minted`], with their status:
    ///
    /// - the keys the reported key created, and the successors of the
    ///   rotations it made (itself included);
    /// - in turn, the keys those minted the same way;
    /// - of a key created by the reported key or by a minted one, its whole
    ///   lineage: every successor, however it was rotated (an automatic
    ///   rotation delivers it to the URL its creator chose);
    /// - at most [`CompromiseOptions::max_minted`] (itself at most
    ///   [`MAX_MINTED`]) for the whole report, so that its work is bounded
    ///   whatever it holds; past that,
    ///   [`CompromiseResult::minted_truncated`]. A key reported twice is
    ///   walked once, at its first entry.
    ///
    /// The reported key's own successors made by another key, by the
    /// system or by automatic rotation (delivered to its holder's webhook)
    /// are not its. Listing is the default, since a key rotating itself on
    /// schedule is normal: revoking a leaked key's successors could take
    /// down the key its holder uses now. With `revoke_minted`, those not
    /// revoked yet are revoked too (expired ones included, as a reported
    /// key is), each with reason `compromised` and a `key.compromised`
    /// event naming the reported key (`minted_by`). A minted key whose row
    /// is gone from the store (deleted by hand) is left out, and the keys
    /// it minted are still looked for.
    ///
    /// A reporting key ([`Actor::Key`]) that is revoked (on any node) or
    /// expired is refused with [`Error::ActorRevoked`] before anything is read; a
    /// report naming the reporting key itself revokes it and goes on (so
    /// such a report, failing after that, is sent again by another key or
    /// as [`Actor::System`]). A reporting key revoked or expired while its
    /// report ran, by anything but the report, is refused at the end the
    /// same way (what the report revoked stays revoked): its answer would
    /// tell it what became of it.
    ///
    /// Keys are handled in order. A store failure partway through ends the
    /// call with an error, the keys before it already revoked: a report is
    /// safe to send again (those then read `already_revoked`, and minted
    /// keys revoked before show as `revoked`).
    pub async fn report_compromised_with(
        &self,
        keys: &[String],
        options: CompromiseOptions<'_>,
        actor: Actor<'_>,
    ) -> Result<Vec<CompromiseResult>, Error> {
        if keys.len() > MAX_REPORT_KEYS {
            return Err(Error::Invalid(format!(
                "a report holds at most {MAX_REPORT_KEYS} keys"
            )));
        }
        // Trimmed; a blank source is none.
        let source = options.source.map(str::trim).filter(|s| !s.is_empty());
        if let Some(s) = source
            && (s.chars().count() > 200 || s.chars().any(crate::lifecycle::unprintable))
        {
            return Err(Error::Invalid(
                "`source` must be at most 200 characters, without control, invisible or \
                 text-direction characters"
                    .into(),
            ));
        }
        // A key in the source (a scanner's finding pasted whole) is kept as
        // its hint: refusing would leave the reported keys live.
        let source = source.map(crate::key::redact_keys);
        let source = source.as_deref();
        // The reason is `compromised` alone; where the report
        // came from goes to the audit event.
        // The reporting key, if a key, must still be live (checked once: a
        // report naming the reporter's own key goes on after revoking it).
        self.actor_still_live(actor, "report_compromised").await?;
        let reason = "compromised";
        let details = json!({ "reason": reason, "source": source });
        let revoking = Revoking {
            actor,
            reason,
            details: &details,
        };
        let format = self.key_format().clone();
        let mut out = Vec::with_capacity(keys.len());
        // The minted keys listed for the whole report, not per entry: a
        // report of one long-lived key 10,000 times must not walk its tree
        // 10,000 times. A key reported again is walked once, at its first
        // entry.
        let mut budget = options.max_minted.min(MAX_MINTED);
        let mut walked = std::collections::HashSet::new();
        // The keys this report revoked (reported or minted), so that the
        // reporting key, found revoked at the end, is told apart: revoked
        // by its own report, or by someone else meanwhile.
        let mut revoked_here = std::collections::HashSet::new();
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
                    minted: Vec::new(),
                    minted_truncated: false,
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
                    minted: Vec::new(),
                    minted_truncated: false,
                });
                continue;
            };
            let status = if record.revoked_at.is_some() {
                // Revoked by another process, perhaps: this one's cache may
                // still hold the key as valid.
                self.forget(&record.key_hash);
                CompromiseStatus::AlreadyRevoked
            } else {
                let kind = event_type::KEY_COMPROMISED;
                let (_, revoked) = self
                    .revoke_as(
                        record.id,
                        Some(revoking.reason),
                        revoking.actor,
                        kind,
                        revoking.details.clone(),
                    )
                    .await?;
                // A concurrent revocation may have won; report what is true.
                if revoked {
                    revoked_here.insert(record.id);
                    CompromiseStatus::Revoked
                } else {
                    CompromiseStatus::AlreadyRevoked
                }
            };
            let (minted, minted_truncated) = if walked.insert(record.id) {
                let found = self
                    .walk_minted(
                        record.id,
                        budget,
                        options.revoke_minted.then_some(&revoking),
                        &mut revoked_here,
                    )
                    .await?;
                budget -= found.0.len();
                found
            } else {
                (Vec::new(), false)
            };
            out.push(CompromiseResult {
                index,
                status,
                key_id: Some(record.id),
                hint: shown,
                minted,
                minted_truncated,
            });
        }
        // A reporting key revoked (or expired) meanwhile by anyone but this
        // report is refused as any request with it is: the report's answer
        // would tell it (its own entry `already_revoked`). What the report
        // revoked stays revoked.
        if let Actor::Key(reporter) = actor
            && !revoked_here.contains(&reporter.id)
        {
            self.actor_still_live(actor, "report_compromised").await?;
        }
        Ok(out)
    }

    /// The keys `leaked` minted, and those minted in turn, and every
    /// successor in a lineage one of them created, breadth first (each
    /// once; at most `limit`, and whether there were more), with their
    /// status. With `revoke`, each is revoked as it is found (and added to
    /// `revoked_here` if this call revoked it), before
    /// the keys it minted are read: a key it mints meanwhile is refused
    /// (the SQLite and PostgreSQL stores check the acting key), so none
    /// within the limit escapes the walk. Keys past the limit are neither
    /// listed nor revoked (the result says there were more).
    async fn walk_minted(
        &self,
        leaked: KeyId,
        limit: usize,
        revoke: Option<&Revoking<'_, '_>>,
        revoked_here: &mut std::collections::HashSet<KeyId>,
    ) -> Result<(Vec<MintedKey>, bool), Error> {
        // Per key walked, whether its lineage was started by a minter (a
        // key the leaked one or its minted keys created): every successor
        // in such a lineage is the minter's, however it was made (an
        // automatic rotation delivers it to the URL the minter chose). The
        // leaked key's own lineage is its holder's.
        let mut started_by_minter = HashMap::from([(leaked, false)]);
        let mut minted = Vec::new();
        let mut minters = VecDeque::from([leaked]);
        while let Some(minter) = minters.pop_front() {
            // Each with whether it is known to be in a lineage a minter
            // started (the successor of a key in one).
            let mut found: Vec<(KeyId, bool)> = self
                .store()
                .minted_by(minter)
                .await
                .map_err(Error::Unavailable)?
                .into_iter()
                .map(|id| (id, false))
                .collect();
            if started_by_minter.get(&minter) == Some(&true)
                && let Some(next) = self
                    .store()
                    .successor(minter)
                    .await
                    .map_err(Error::Unavailable)?
            {
                found.push((next.id, true));
            }
            for (id, in_minters_lineage) in found {
                if let Some(started) = started_by_minter.get_mut(&id) {
                    // Found before its lineage was known to be a minter's
                    // (its parent turned up later): its successors are
                    // followed now.
                    if in_minters_lineage && !*started && id != leaked {
                        *started = true;
                        minters.push_back(id);
                    }
                    continue;
                }
                let mut key = match self.get(id).await {
                    Ok(key) => key,
                    // Its row deleted behind the runtime's back: nothing to
                    // list or revoke, but what it minted is still read.
                    Err(Error::NotFound(_)) => {
                        started_by_minter.insert(id, in_minters_lineage);
                        minters.push_back(id);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if minted.len() == limit {
                    return Ok((minted, true));
                }
                let started = in_minters_lineage
                    || key
                        .parent_key_id
                        .is_none_or(|parent| started_by_minter.get(&parent) == Some(&true));
                started_by_minter.insert(id, started);
                if key.status == Status::Revoked {
                    // Revoked by another process, perhaps: this one's cache
                    // may still hold the key as valid.
                    if let Some(record) = self.store().get(id).await.map_err(Error::Unavailable)? {
                        self.forget(&record.key_hash);
                    }
                } else if let Some(revoking) = revoke {
                    let mut details = revoking.details.clone();
                    details["minted_by"] = json!(leaked);
                    let kind = event_type::KEY_COMPROMISED;
                    let (revoked, now) = self
                        .revoke_as(id, Some(revoking.reason), revoking.actor, kind, details)
                        .await?;
                    if now {
                        revoked_here.insert(id);
                    }
                    key = revoked;
                }
                minted.push(MintedKey {
                    key_id: id,
                    status: key.status,
                });
                minters.push_back(id);
            }
        }
        Ok((minted, false))
    }
}
