//! # outpost-protocol
//!
//! What travels between a site and the central server, and how it is encoded.
//!
//! Every request and response body is JSON compressed with zstd (`Content-Encoding: zstd`).
//! Every request carries [`PROTOCOL_VERSION`] in the `Outpost-Protocol` header; a server that
//! speaks another version answers `409` with the code `protocol_mismatch` before reading the
//! body, so an old site is told to upgrade rather than misread.
//!
//! The sync itself (DESIGN.md §5): a site **pushes** its change log in batches, each applied
//! by the central server in one transaction and acknowledged; then it **pulls** batches after
//! its cursor, and moves the cursor only after it committed the batch. Re-sending a push batch
//! or re-asking a pull batch changes nothing.

pub mod columns;
pub mod seed;

use model::{Change, LogPos, RecordId, Seq, SiteId};
use serde::{Deserialize, Serialize};
use std::io::Read;

/// The version of the wire types below. Bump it on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 2;
/// The header that carries the protocol version on every request.
pub const VERSION_HEADER: &str = "outpost-protocol";
/// The header that carries the site's machine fingerprint on every sync request: the central
/// server binds a site to the machine of its first sync, and refuses a copy elsewhere.
pub const MACHINE_HEADER: &str = "outpost-machine";
/// The largest compressed request body the central server accepts.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// The largest decompressed body either side accepts (a zip bomb stops here).
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// The most changes one push batch may carry.
pub const MAX_PUSH_CHANGES: usize = 50_000;
/// The highest position a site's change log may reach (2^53 - 1, the largest integer every JSON
/// reader keeps exactly). A site writing a thousand changes a second reaches it in 285,000
/// years; a position beyond it is a forgery or a corrupt log, and is refused.
pub const MAX_SEQ: i64 = (1 << 53) - 1;
/// zstd level. On whole batches of catalogue-like records level 1 compressed better than 3
/// (14.4% of the JSON against 15.1%) in under half the time (measured in `benches/sync.rs`'s
/// data: 19 ms against 46 ms for a 7.4 MB batch), and time is what the central server lacks.
pub const ZSTD_LEVEL: i32 = 1;

/// A batch of a site's change log, oldest first, each change after `after`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PushRequest {
    /// The position the site believes the central server has acknowledged (its last push
    /// answer). When the central server's own record differs, nothing is applied and the answer
    /// says so ([`PushResponse::out_of_step`]): the site was restored from a backup, or the
    /// central server was, and a change must never be taken for one already held.
    pub after: Seq,
    pub changes: Vec<Change>,
}

/// The central server's answer to a push.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PushResponse {
    /// Every change of the site up to here is applied or rejected; push after this next time.
    pub acked: Seq,
    /// How many changes of the batch were applied now.
    pub applied: u64,
    /// The changes of this batch that were refused, with the reason (also kept on the server).
    pub rejections: Vec<Rejection>,
    /// The batch's `after` is not what the central server acknowledged (`acked` is): nothing was
    /// applied. A site behind (`after < acked`) was restored from a backup and renumbers its
    /// waiting changes to follow `acked`; a site ahead pushes again from `acked`.
    #[serde(default)]
    pub out_of_step: bool,
}

/// A change the central server refused, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rejection {
    pub seq: Seq,
    pub table: String,
    pub id: RecordId,
    pub reason: String,
    /// The record as the central server holds it, for the site to put back in place of the
    /// refused version; `None` when the central server holds no version this site may see (the
    /// site then removes the record it had no right to write).
    #[serde(default)]
    pub central_version: Option<String>,
}

/// Where a site is in what the central server has for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cursor {
    /// Initialisation: the current state, record by record, in (table, id) order, after this
    /// key; then the log from `log_from` (the log position when the snapshot began).
    /// `scanned` of `total` records have been looked at so far (for "what remains").
    Snapshot {
        after: Option<(String, String)>,
        log_from: Seq,
        /// With `log_from`, the log position (see `model::LogPos`); 0 on SQLite.
        #[serde(default)]
        log_from_xid: i64,
        #[serde(default)]
        scanned: u64,
        #[serde(default)]
        total: u64,
    },
    /// Steady state: the log after this position.
    Log {
        after: Seq,
        #[serde(default)]
        after_xid: i64,
    },
}

impl Cursor {
    /// A cursor in the log after `pos`.
    pub fn log(pos: LogPos) -> Cursor {
        Cursor::Log { after: pos.seq, after_xid: pos.xid }
    }
}

/// Ask for the next batch after `cursor` (`None`: this site has never pulled).
#[derive(Debug, Serialize, Deserialize)]
pub struct PullRequest {
    pub cursor: Option<Cursor>,
    /// Stop adding changes once the batch holds this many bytes of records.
    pub max_bytes: usize,
    /// How many of its own changes the site still has to push (for `central site list`; a
    /// site older than this field sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_to_push: Option<u64>,
    /// How the answer's changes are written; a site older than this field is sent rows.
    #[serde(default, skip_serializing_if = "PageFormat::is_rows")]
    pub format: PageFormat,
}

/// How a pull answer's changes are written. Both are JSON; a reader tells them apart by how the
/// page begins, so [`decode_pull`] reads either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageFormat {
    /// Each change whole (`{"changes":[{"seq":..,"table":..,"data":{..}},..]}`).
    #[default]
    Rows,
    /// Column by column ([`columns`]): a third fewer bytes on the wire.
    Columns,
}

impl PageFormat {
    fn is_rows(&self) -> bool {
        *self == PageFormat::Rows
    }
}

/// One pull batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct PullResponse {
    pub changes: Vec<Change>,
    /// Where to continue; store it only after the batch is committed.
    pub next: Cursor,
    /// How many changes still wait after this batch (an estimate during initialisation).
    pub remaining: u64,
    /// The last change of this site the server holds. A site that believes it pushed less was
    /// restored from a backup: it learns so here even when it has nothing to push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<Seq>,
}

/// The central server's view of a site, and of itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub server_version: String,
    pub protocol: u32,
    pub central: SiteId,
    pub site: SiteId,
    /// The last change of this site the server holds.
    pub acked: Seq,
    /// The server's clock, RFC 3339, so a site can tell when its own clock is wrong.
    pub clock: String,
    /// The last push batch applied from this site, so that a site whose answer was lost asks
    /// instead of sending the batch again.
    #[serde(default)]
    pub last_push: Option<LastPush>,
}

/// A push batch the central server applied: it followed `after`, took the site to `acked`,
/// and `rejected` of its changes were refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastPush {
    pub after: Seq,
    pub acked: Seq,
    pub rejected: u64,
    /// [`push_digest`] of the changes it applied: a site tells its own unanswered batch from
    /// another that took the same positions (a site restored from a backup numbers its new
    /// changes as the lost ones were numbered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A digest of pushed changes: position, table, id, action and document of each. The central
/// server keeps it of the last batch it applied from each site; a site, of the batch it sent.
pub fn push_digest<'a>(changes: impl Iterator<Item = &'a Change>) -> String {
    use blake2::{Blake2s256, Digest};
    let mut hash = Blake2s256::new();
    for change in changes {
        hash.update(change.seq.0.to_le_bytes());
        for part in [change.table.as_str(), change.id.as_str(), change.action.code()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        if let model::Action::MergeInto(into) = &change.action {
            hash.update(into.as_str().as_bytes());
        }
        let data = change.data.as_ref().map_or("", |d| d.get());
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(data.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The body of every error response: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `protocol_mismatch`,
    /// `bad_request`, `too_large`, `internal`.
    pub code: String,
    /// What went wrong and what a person can do about it.
    pub message: String,
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not valid zstd (truncated or corrupt): {0}")]
    Compression(std::io::Error),
    #[error("the body decompresses to more than {MAX_DECODED_BYTES} bytes")]
    TooLarge,
    #[error("the body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A change as the central server reads it from its database, with the record as stored text.
#[derive(Debug, Clone)]
pub struct OutgoingChange {
    pub seq: Seq,
    pub table: String,
    pub id: RecordId,
    pub action: model::Action,
    pub data: Option<String>,
    pub origin: SiteId,
}

/// Encodes a [`PullResponse`] straight from stored records: the same JSON serde would write,
/// then compressed. Records are copied as stored, not parsed again (they were
/// checked when they were written; the site checks them again when it decodes the batch).
pub fn encode_pull_response(
    changes: &[OutgoingChange],
    next: &Cursor,
    remaining: u64,
    acked: Option<Seq>,
    format: PageFormat,
) -> Vec<u8> {
    // Written whole, then compressed whole: faster than feeding a streaming compressor many
    // small writes.
    let json = match format {
        PageFormat::Rows => pull_response_json(changes, next, remaining, acked),
        PageFormat::Columns => columns::page_json(changes, next, remaining, acked),
    };
    zstd::bulk::compress(&json, ZSTD_LEVEL).unwrap_or_default()
}

/// Reads a pull answer's JSON in either [`PageFormat`].
pub fn decode_pull(json: &[u8]) -> Result<PullResponse, DecodeError> {
    if json.starts_with(columns::PREFIX) {
        Ok(columns::parse_page(json)?)
    } else {
        Ok(serde_json::from_slice(json)?)
    }
}

/// A [`PullResponse`]'s JSON, as [`encode_pull_response`] compresses it.
pub fn pull_response_json(changes: &[OutgoingChange], next: &Cursor, remaining: u64, acked: Option<Seq>) -> Vec<u8> {
    use std::io::Write;
    fn write_all(
        out: &mut impl Write,
        changes: &[OutgoingChange],
        next: &Cursor,
        remaining: u64,
        acked: Option<Seq>,
    ) -> std::io::Result<()> {
        out.write_all(b"{\"changes\":[")?;
        for (i, change) in changes.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{{\"seq\":{},\"table\":", change.seq.0)?;
            serde_json::to_writer(&mut *out, &change.table)?;
            out.write_all(b",\"id\":")?;
            serde_json::to_writer(&mut *out, &change.id)?;
            out.write_all(b",\"action\":")?;
            serde_json::to_writer(&mut *out, &change.action)?;
            if let Some(data) = &change.data {
                out.write_all(b",\"data\":")?;
                out.write_all(data.as_bytes())?;
            }
            out.write_all(b",\"origin\":")?;
            serde_json::to_writer(&mut *out, &change.origin)?;
            out.write_all(b"}")?;
        }
        out.write_all(b"],\"next\":")?;
        serde_json::to_writer(&mut *out, next)?;
        write!(out, ",\"remaining\":{remaining}")?;
        if let Some(acked) = acked {
            write!(out, ",\"acked\":{}", acked.0)?;
        }
        out.write_all(b"}")
    }
    let mut json =
        Vec::with_capacity(changes.iter().map(|c| c.data.as_ref().map_or(0, String::len) + 96).sum::<usize>() + 128);
    // Writing into memory cannot fail.
    let _ = write_all(&mut json, changes, next, remaining, acked);
    json
}

/// Serialises and compresses a body.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own types to a Vec cannot fail (no maps with non-string keys).
    compress(&serde_json::to_vec(value).unwrap_or_default())
}

/// Compresses a JSON body as every body travels.
pub fn compress(json: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(json, ZSTD_LEVEL).unwrap_or_default()
}

/// Decompresses (bounded) and parses a body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, DecodeError> {
    let json = decompress(body)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Decompresses a body, refusing one that grows past [`MAX_DECODED_BYTES`].
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = zstd::stream::read::Decoder::new(body).map_err(DecodeError::Compression)?;
    let mut out = Vec::new();
    let read =
        (&mut decoder).take(MAX_DECODED_BYTES as u64 + 1).read_to_end(&mut out).map_err(DecodeError::Compression)?;
    if read > MAX_DECODED_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

/// The changes of a pull answer whose body was cut part way: every change that arrived whole,
/// in order. A cut on a slow link then costs only the bytes that were in flight, not the page.
/// zstd gives back data a block at a time (at most 128 KiB of records), so the changes of the
/// last, unfinished block are lost with it.
pub fn changes_of_cut_pull(prefix: &[u8]) -> Vec<Change> {
    let mut json = Vec::new();
    if let Ok(mut decoder) = zstd::stream::read::Decoder::new(prefix) {
        // The read fails at the cut; what came before it stays in `json`.
        let _ = (&mut decoder).take(MAX_DECODED_BYTES as u64).read_to_end(&mut json);
    }
    if let Some(groups) = json.strip_prefix(columns::PREFIX) {
        return columns::changes_of_cut(groups);
    }
    let Some(mut rest) = json.strip_prefix(b"{\"changes\":[".as_slice()) else { return Vec::new() };
    let mut changes = Vec::new();
    loop {
        let mut parser = serde_json::Deserializer::from_slice(rest).into_iter::<Change>();
        let Some(Ok(change)) = parser.next() else { return changes };
        let used = parser.byte_offset();
        // A change is whole only when what follows it arrived too (`,` or the end of the list).
        match rest.get(used) {
            Some(b',') => rest = &rest[used + 1..],
            Some(b']') => {
                changes.push(change);
                return changes;
            }
            _ => return changes,
        }
        changes.push(change);
    }
}

/// The current UTC time as RFC 3339, in whole seconds with `Z` (`2026-12-01T15:09:05Z`): the
/// form every time this crate's users store and compare as text.
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

/// Unix time `secs` as RFC 3339, in the form of [`now_rfc3339`] (`None` out of range).
pub fn rfc3339_of(secs: i64) -> Option<String> {
    jiff::Timestamp::from_second(secs).ok().map(rfc3339)
}

/// Seconds from RFC 3339 time `at` to now (`None` when `at` cannot be read).
pub fn seconds_since(at: &str) -> Option<f64> {
    let at = at.parse::<jiff::Timestamp>().ok()?;
    Some(jiff::Timestamp::now().duration_since(at).as_secs_f64())
}

fn rfc3339(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_body_is_a_compression_error() {
        let body =
            encode(&PullRequest { cursor: None, max_bytes: 1000, waiting_to_push: None, format: PageFormat::Rows });
        let err = decode::<PullRequest>(&body[..body.len() / 2]).err();
        assert!(matches!(err, Some(DecodeError::Compression(_))), "{err:?}");
    }

    #[test]
    fn a_body_round_trips() {
        let cursor = Cursor::Snapshot {
            after: Some(("item".into(), "i1".into())),
            log_from: Seq(7),
            log_from_xid: 0,
            scanned: 1,
            total: 9,
        };
        let body = encode(&PullRequest {
            cursor: Some(cursor.clone()),
            max_bytes: 10,
            waiting_to_push: Some(3),
            format: PageFormat::Columns,
        });
        let back: PullRequest = decode(&body).expect("decodes");
        assert_eq!(back.cursor, Some(cursor));
    }

    #[test]
    fn a_pull_response_written_from_stored_records_reads_back() {
        let changes = vec![
            OutgoingChange {
                seq: Seq(3),
                table: "item".into(),
                id: "i\"1".into(),
                action: model::Action::Upsert,
                data: Some(r#"{"name":"Amoxicillin \u00e9"}"#.into()),
                origin: "central".into(),
            },
            OutgoingChange {
                seq: Seq(4),
                table: "item".into(),
                id: "i2".into(),
                action: model::Action::MergeInto("i1".into()),
                data: None,
                origin: "north".into(),
            },
        ];
        for format in [PageFormat::Rows, PageFormat::Columns] {
            let body = encode_pull_response(&changes, &Cursor::log(LogPos::new(0, Seq(4))), 7, Some(Seq(2)), format);
            let back = decode_pull(&decompress(&body).expect("zstd")).expect("decodes");
            assert_eq!(back.remaining, 7);
            assert_eq!(back.next, Cursor::log(LogPos::new(0, Seq(4))));
            assert_eq!(back.changes.len(), 2);
            assert_eq!(back.changes[0].id.as_str(), "i\"1");
            assert_eq!(back.changes[0].data.as_ref().map(|d| d.get()), Some(r#"{"name":"Amoxicillin \u00e9"}"#));
            assert_eq!(back.changes[1].action, model::Action::MergeInto("i1".into()));
            assert!(back.changes[1].data.is_none());
            assert_eq!(back.changes[1].origin.as_str(), "north");
        }
    }

    #[test]
    fn the_whole_changes_of_a_cut_pull_answer_are_kept() {
        let changes: Vec<OutgoingChange> = (0..20_000)
            .map(|n| OutgoingChange {
                seq: Seq(n + 1),
                table: "item".into(),
                id: format!("item-{n}").into(),
                action: model::Action::Upsert,
                data: Some(format!(r#"{{"code":"C{n}","name":"item number {n} with a longer name","pack":{n}}}"#)),
                origin: "central".into(),
            })
            .collect();
        for format in [PageFormat::Rows, PageFormat::Columns] {
            let next = Cursor::Log { after: Seq(20_000), after_xid: 0 };
            let body = encode_pull_response(&changes, &next, 0, None, format);
            let whole = changes_of_cut_pull(&body);
            assert_eq!(whole.len(), 20_000, "{format:?}: an uncut answer gives every change");
            let mut last = 0;
            for cut in [0, 10, body.len() / 3, body.len() / 2, body.len() - 10] {
                let kept = changes_of_cut_pull(&body[..cut]);
                assert!(kept.len() >= last && kept.len() < 20_000, "{format:?}, cut at {cut}: {} changes", kept.len());
                for (n, change) in kept.iter().enumerate() {
                    assert_eq!((change.seq, change.id.as_str()), (Seq(n as i64 + 1), format!("item-{n}").as_str()));
                    assert_eq!(change.data.as_ref().map(|d| d.get()), changes[n].data.as_deref());
                }
                last = kept.len();
            }
            assert!(last > 0, "{format:?}: most of a cut answer is kept");
        }
    }

    #[test]
    fn times_are_whole_seconds_in_utc_with_z() {
        let at =
            |second: i64, nanosecond: i32| rfc3339(jiff::Timestamp::new(second, nanosecond).expect("a time in range"));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400, 999_999_999), "2000-02-29T00:00:00Z", "cut, not rounded");
        assert_eq!(at(1_796_137_745, 500_000_000), "2026-12-01T15:09:05Z");
        let now = now_rfc3339();
        assert_eq!((now.len(), &now[10..11], &now[19..]), (20, "T", "Z"), "{now}");
    }

    #[test]
    fn a_zip_bomb_is_refused() {
        let huge = vec![b' '; MAX_DECODED_BYTES + 10];
        let body = zstd::bulk::compress(&huge, 1).expect("compresses");
        assert!(matches!(decode::<PullRequest>(&body), Err(DecodeError::TooLarge)));
    }
}
