//! The audit trail's tamper evidence, shared by the gateway (which writes it) and `wgctl` (which
//! verifies an export offline).
//!
//! Each event carries the hash of the one before it and its own sha256 over length-prefixed
//! fields ([`event_hash`]). That chain alone proves nothing against someone who can write the
//! store: they can delete the newest rows, or edit a row and recompute every hash after it. So
//! the gateway signs the chain head with its Ed25519 key every N events, every T seconds and at
//! shutdown ([`Checkpoint`]), and keeps the checkpoints in the store and beside the recordings.
//! [`verify`] recomputes the chain and checks every checkpoint, naming the first bad event and
//! what happened to it: edited, deleted, inserted, reordered, re-chained (the chain is whole but
//! a signed checkpoint disagrees), or truncated (a checkpoint covers events that are gone).
//! Events after the last checkpoint are covered by the chain only; the report says how many.

use ed25519_dalek::{Signature, Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::seal::{SigningKey, VerifyingKey};

/// One audit event as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub at_ms: u64,
    pub kind: String,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// JSON text.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of an audit event: sha256 over the previous hash and the event's fields, each
/// length-prefixed so no two different events hash the same. `hash` itself is not an input.
pub fn event_hash(prev: &str, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    for part in [
        prev,
        &e.seq.to_string(),
        &e.id,
        &e.at_ms.to_string(),
        &e.kind,
        e.actor.as_deref().unwrap_or(""),
        e.session_id.as_deref().unwrap_or(""),
        &e.detail,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A signed statement: "the chain up to event `seq` ends in `hash`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
    pub at_ms: u64,
    /// The gateway that signed.
    pub gateway: String,
    /// Hex of the Ed25519 public key that signed (informational: verify with your own copy).
    pub public_key: String,
    /// Hex of the Ed25519 signature over [`Checkpoint::signed_message`].
    pub signature: String,
}

impl Checkpoint {
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "wardengate-audit-checkpoint-v1\n{}\n{}\n{}\n{}\n",
            self.gateway, self.seq, self.hash, self.at_ms
        )
        .into_bytes()
    }

    /// Sign the chain head `(seq, hash)`.
    pub fn sign(key: &SigningKey, gateway: &str, seq: i64, hash: &str, at_ms: u64) -> Checkpoint {
        let mut c = Checkpoint {
            seq,
            hash: hash.to_string(),
            at_ms,
            gateway: gateway.to_string(),
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: String::new(),
        };
        c.signature = hex::encode(key.sign(&c.signed_message()).to_bytes());
        c
    }

    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .is_some_and(|sig| {
                key.verify(&self.signed_message(), &Signature::from_bytes(&sig))
                    .is_ok()
            })
    }
}

/// One line of an export (`wgctl audit export`): JSON lines, events and checkpoints in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Event(AuditEvent),
    Checkpoint(Checkpoint),
}

/// What is wrong with the first bad event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// The event's fields no longer give its hash.
    Edited,
    /// Events are missing before this one.
    Deleted,
    /// The event before this one does not belong in the chain.
    Inserted,
    /// Events are out of order.
    Reordered,
    /// The chain is whole but a signed checkpoint disagrees: events were edited and every hash
    /// after them recomputed.
    Rechained,
    /// A signed checkpoint covers events that are not there: the newest were deleted.
    Truncated,
    /// A checkpoint's signature does not verify (forged, or another key).
    BadSignature,
}

/// The verdict on a trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub events: u64,
    pub checkpoints: u64,
    /// The last event a valid checkpoint covers.
    pub signed_through: Option<i64>,
    /// Events after the last checkpoint (covered by the chain only).
    pub unsigned_tail: u64,
    /// `None` when everything verifies.
    pub damage: Option<Damage>,
    /// The sequence number of the first bad event (or checkpoint).
    pub at_seq: Option<i64>,
    /// One sentence for a person.
    pub message: String,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.damage.is_none()
    }
}

/// Verify `events` (in the order given) against the chain and `checkpoints` (with `key`; without
/// a key, checkpoints are matched against the chain but their signatures are not checked).
pub fn verify(
    events: &[AuditEvent],
    checkpoints: &[Checkpoint],
    key: Option<&VerifyingKey>,
) -> AuditReport {
    let mut report = AuditReport {
        events: events.len() as u64,
        checkpoints: checkpoints.len() as u64,
        signed_through: None,
        unsigned_tail: 0,
        damage: None,
        at_seq: None,
        message: String::new(),
    };
    let fail = |mut r: AuditReport, d: Damage, seq: i64, msg: String| {
        r.damage = Some(d);
        r.at_seq = Some(seq);
        r.message = msg;
        r
    };
    // The chain, event by event.
    let mut prev_hash = String::new();
    for (i, e) in events.iter().enumerate() {
        let expected_seq = events.first().map_or(1, |f| f.seq) + i as i64;
        if event_hash(&e.prev_hash, e) != e.hash {
            return fail(
                report,
                Damage::Edited,
                e.seq,
                format!(
                    "event #{} ({}, {}) was edited: its fields no longer give its hash",
                    e.seq, e.id, e.kind
                ),
            );
        }
        if e.prev_hash != prev_hash {
            let before = &events[..i];
            let (damage, msg) = if i >= 2 && before[i - 2].hash == e.prev_hash {
                (
                    Damage::Inserted,
                    format!(
                        "event #{} ({}) was inserted: the event after it continues the chain \
                         from the one before it",
                        events[i - 1].seq,
                        events[i - 1].id
                    ),
                )
            } else if (i > 0 && e.seq <= events[i - 1].seq)
                || events[i + 1..].iter().any(|l| l.hash == e.prev_hash)
            {
                (
                    Damage::Reordered,
                    format!("event #{} ({}) is out of order", e.seq, e.id),
                )
            } else {
                (
                    Damage::Deleted,
                    format!(
                        "events before #{} ({}) were deleted: it does not continue the chain \
                         from #{}",
                        e.seq,
                        e.id,
                        before.last().map_or(0, |b| b.seq)
                    ),
                )
            };
            let seq = if damage == Damage::Inserted {
                events[i - 1].seq
            } else {
                e.seq
            };
            return fail(report, damage, seq, msg);
        }
        if e.seq != expected_seq {
            // Hashes agree but numbers skip: rows removed and the chain re-linked by hand would
            // have failed above, so this is a renumbering.
            return fail(
                report,
                Damage::Deleted,
                e.seq,
                format!(
                    "events before #{} are missing (expected #{expected_seq})",
                    e.seq
                ),
            );
        }
        prev_hash = e.hash.clone();
    }
    // The checkpoints, oldest first.
    let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    let last_seq = events.last().map(|e| e.seq);
    // The chain check above proved the numbers contiguous: an event's place is its number.
    let first_seq = events.first().map_or(1, |e| e.seq);
    let at = |seq: i64| {
        usize::try_from(seq - first_seq)
            .ok()
            .and_then(|i| events.get(i))
            .filter(|e| e.seq == seq)
    };
    for c in sorted {
        if let Some(k) = key {
            if !c.verify_signature(k) {
                return fail(
                    report,
                    Damage::BadSignature,
                    c.seq,
                    format!(
                        "the checkpoint at event #{} does not verify with this key: forged, or \
                         signed by another gateway key",
                        c.seq
                    ),
                );
            }
        }
        let signed_from = report.signed_through.map_or(1, |s| s + 1);
        let (damage, from, message) = match at(c.seq) {
            Some(e) if e.hash == c.hash => {
                report.signed_through = Some(c.seq);
                continue;
            }
            // The event now numbered like the signed one was written after the signature:
            // the signed events were deleted and their numbers used again.
            Some(e) if e.at_ms > c.at_ms => (
                Damage::Deleted,
                signed_from,
                format!(
                    "events from #{signed_from} to #{} were deleted: a checkpoint signed at #{} \
                     covers them, and the event numbered #{} now was written after that \
                     signature",
                    c.seq, c.seq, c.seq
                ),
            ),
            Some(_) => (
                Damage::Rechained,
                signed_from,
                format!(
                    "events #{signed_from} to #{} were rewritten and re-chained: the chain is \
                     whole, but the checkpoint signed at #{} says its hash was {}",
                    c.seq,
                    c.seq,
                    &c.hash[..c.hash.len().min(16)]
                ),
            ),
            None if last_seq.is_none_or(|l| c.seq > l) => {
                let from = last_seq.map_or(1, |l| l + 1);
                let message = format!(
                    "events from #{from} on were deleted: a checkpoint signed at #{} covers \
                     events that are not there",
                    c.seq
                );
                (Damage::Truncated, from, message)
            }
            None => (
                Damage::Deleted,
                c.seq,
                format!("event #{} (signed by a checkpoint) is missing", c.seq),
            ),
        };
        return fail(report, damage, from, message);
    }
    report.unsigned_tail = match (report.signed_through, last_seq) {
        (Some(s), Some(l)) => (l - s).max(0) as u64,
        (None, _) => events.len() as u64,
        _ => 0,
    };
    report.message = match report.signed_through {
        Some(s) => format!(
            "OK: {} events chain correctly; signed through #{s} ({} checkpoints){}",
            report.events,
            report.checkpoints,
            if report.unsigned_tail > 0 {
                format!(
                    "; the last {} events are after the last checkpoint (chained, not yet signed)",
                    report.unsigned_tail
                )
            } else {
                String::new()
            }
        ),
        None => format!(
            "OK: {} events chain correctly; no checkpoint signs them yet",
            report.events
        ),
    };
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn trail(n: i64) -> Vec<AuditEvent> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    seq,
                    id: format!("evt_{seq}"),
                    at_ms: 1000 + seq as u64,
                    kind: "session.start".into(),
                    actor: Some("alice".into()),
                    session_id: None,
                    detail: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = event_hash(&prev, &e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn rechain(events: &mut [AuditEvent]) {
        let mut prev = String::new();
        for e in events.iter_mut() {
            e.prev_hash = prev.clone();
            e.hash = event_hash(&prev, e);
            prev = e.hash.clone();
        }
    }

    fn cps(events: &[AuditEvent], at: &[i64]) -> Vec<Checkpoint> {
        at.iter()
            .map(|&s| {
                let e = &events[(s - 1) as usize];
                Checkpoint::sign(&key(), "gw-1", s, &e.hash, e.at_ms)
            })
            .collect()
    }

    fn check(events: &[AuditEvent], c: &[Checkpoint]) -> AuditReport {
        verify(events, c, Some(&key().verifying_key()))
    }

    /// What `check` finds in `events` against checkpoints `c`: the damage and where.
    fn found(events: &[AuditEvent], c: &[Checkpoint]) -> (Option<Damage>, Option<i64>) {
        let r = check(events, c);
        (r.damage, r.at_seq)
    }

    #[test]
    fn a_whole_trail_verifies_and_reports_its_tail() {
        let t = trail(10);
        let r = check(&t, &cps(&t, &[4, 8]));
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.signed_through, Some(8));
        assert_eq!(r.unsigned_tail, 2);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let t = trail(10);
        let c = cps(&t, &[5, 10]);

        let mut edited = t.clone();
        edited[2].actor = Some("mallory".into());
        assert_eq!(found(&edited, &c), (Some(Damage::Edited), Some(3)));

        let mut deleted = t.clone();
        deleted.remove(3);
        assert_eq!(found(&deleted, &c), (Some(Damage::Deleted), Some(5)));

        // A forged event chained after #4 and numbered 5; the real #5 follows it.
        let mut inserted = t.clone();
        let mut extra = t[4].clone();
        extra.id = "evt_fake".into();
        extra.detail = "{\"x\":1}".into();
        extra.hash = event_hash(&extra.prev_hash, &extra);
        inserted.insert(4, extra);
        let r = check(&inserted, &c);
        assert_eq!(r.damage, Some(Damage::Inserted), "{r:?}");
        assert!(r.message.contains("evt_fake"), "{}", r.message);

        let mut reordered = t.clone();
        reordered.swap(6, 7);
        let r = check(&reordered, &c);
        assert_eq!(r.damage, Some(Damage::Reordered), "{r:?}");

        let mut rechained = t.clone();
        rechained[6].detail = "{\"forged\":true}".into();
        rechain(&mut rechained);
        let r = check(&rechained, &c);
        assert_eq!(found(&rechained, &c), (Some(Damage::Rechained), Some(6)));
        assert!(r.message.contains("#6 to #10"), "{}", r.message);

        // The newest deleted and their numbers used again by later events.
        let mut reused = t[..7].to_vec();
        let mut later = trail(10)[7..].to_vec();
        for e in &mut later {
            e.at_ms += 10_000;
        }
        reused.extend(later);
        rechain(&mut reused);
        let r = check(&reused, &c);
        assert_eq!(r.damage, Some(Damage::Deleted), "{r:?}");

        let truncated = t[..7].to_vec();
        assert_eq!(found(&truncated, &c), (Some(Damage::Truncated), Some(8)));

        let mut forged = c.clone();
        forged[1].hash = "00".repeat(32);
        let r = check(&t, &forged);
        assert_eq!(r.damage, Some(Damage::BadSignature), "{r:?}");

        let other = SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        let r = verify(&t, &c, Some(&other));
        assert_eq!(r.damage, Some(Damage::BadSignature), "{r:?}");
    }

    #[test]
    fn export_lines_round_trip() {
        let t = trail(2);
        let lines = vec![
            ExportLine::Event(t[0].clone()),
            ExportLine::Checkpoint(cps(&t, &[1])[0].clone()),
        ];
        for l in lines {
            let s = serde_json::to_string(&l).expect("json");
            let back: ExportLine = serde_json::from_str(&s).expect("parse");
            assert_eq!(back, l);
        }
    }
}
