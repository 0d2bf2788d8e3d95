//! Seed files: a new site's data on a USB stick instead of over a slow link. The central server
//! writes everything the site must hold at one log position, as the pull pages an initial sync
//! would send (each a wire body, zstd-compressed); the site applies them exactly as it applies
//! pulled pages, then syncs only what changed after that position.
//!
//! The layout, so that any damage is found before anything is written:
//!
//! ```text
//! OUTPOST-SEED 1\n
//! {header as JSON}\n
//! (u32 little-endian length, page body) × header.pages
//! Blake2s-256 of everything before (32 bytes)
//! ```

use crate::{Cursor, PullResponse};
use blake2::{Blake2s256, Digest};
use model::{Seq, SiteId};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"OUTPOST-SEED 1\n";
const DIGEST_BYTES: usize = 32;
/// A seed file's pages are compressed as pull pages are: harder levels gain little on this data
/// (its random ids are most of its bytes: level 6 saved 3% and took 1.6 times as long to make,
/// `cargo bench -p outpost --bench seed`), and a faster export is worth more.
pub const ZSTD_LEVEL: i32 = crate::ZSTD_LEVEL;

/// A page's JSON as a seed file holds it.
pub fn compress_page(json: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(json, ZSTD_LEVEL).unwrap_or_default()
}

/// How long a seed file may be used after it was made: what it holds grows stale, and the
/// central server's log is what the site catches up from.
pub const VALID_DAYS: i64 = 30;

/// Who and what a seed file is for. It holds the site's password (a new one, made with the
/// file): keep the file as you would keep the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedHeader {
    /// The site the file is for: importing it as another site is refused.
    pub site: SiteId,
    /// The central server that made it, and the address the site syncs with.
    pub central: SiteId,
    pub central_url: String,
    pub password: String,
    pub created_at: String,
    /// After this, the file is refused: make a new one.
    pub expires_at: String,
    /// Where the site's pulls continue from once the file is applied.
    pub position: Cursor,
    /// The last change of this site the central server held when the file was made: the
    /// site's own log continues after it.
    pub acked: Seq,
    pub records: u64,
    pub pages: u64,
}

impl std::fmt::Debug for SeedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedHeader")
            .field("site", &self.site)
            .field("central", &self.central)
            .field("central_url", &self.central_url)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("position", &self.position)
            .field("acked", &self.acked)
            .field("records", &self.records)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

/// Why a seed file cannot be used. Nothing has been written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("this is not an Outpost seed file (it does not start with `OUTPOST-SEED 1`)")]
    NotASeed,
    #[error("the seed file is damaged or incomplete (its checksum does not match: was it copied whole?); make a new one with `outpost central site export`")]
    Damaged,
    #[error("the seed file's {0} cannot be read; make a new one with `outpost central site export`")]
    Unreadable(&'static str),
    #[error("this seed file is for site `{file}`, not `{asked}`; use the file made for `{asked}`")]
    OtherSite { file: SiteId, asked: SiteId },
    #[error("this seed file was made at {created_at} and expired at {expires_at}; make a new one with `outpost central site export {site}`")]
    Expired { site: SiteId, created_at: String, expires_at: String },
}

/// Writes a seed file's parts in order; `finish` adds the checksum.
pub struct SeedWriter {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for SeedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedWriter").field("bytes", &self.bytes.len()).finish()
    }
}

impl SeedWriter {
    /// Starts a file; `header.pages` must be the number of pages that follow.
    pub fn new(header: &SeedHeader) -> SeedWriter {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(serde_json::to_vec(header).unwrap_or_default());
        bytes.push(b'\n');
        SeedWriter { bytes }
    }

    /// Adds one page: a pull response body as the central server encodes it.
    pub fn page(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).expect("a page is far smaller than 4 GiB");
        self.bytes.extend(len.to_le_bytes());
        self.bytes.extend(body);
    }

    pub fn finish(mut self) -> Vec<u8> {
        let digest = Blake2s256::digest(&self.bytes);
        self.bytes.extend(digest);
        self.bytes
    }
}

/// A seed file checked whole: its header, and its pages still compressed.
#[derive(Debug)]
pub struct Seed<'a> {
    pub header: SeedHeader,
    pages: Vec<&'a [u8]>,
}

impl<'a> Seed<'a> {
    /// Checks a file as of `now` (RFC 3339): its checksum first, then its header; for `site`
    /// when one is asked for.
    pub fn read(bytes: &'a [u8], site: Option<&SiteId>, now: &str) -> Result<Seed<'a>, SeedError> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else { return Err(SeedError::NotASeed) };
        if rest.len() < DIGEST_BYTES {
            return Err(SeedError::Damaged);
        }
        let (body, digest) = bytes.split_at(bytes.len() - DIGEST_BYTES);
        if Blake2s256::digest(body).as_slice() != digest {
            return Err(SeedError::Damaged);
        }
        let rest = &body[MAGIC.len()..];
        let end = rest.iter().position(|b| *b == b'\n').ok_or(SeedError::Unreadable("header"))?;
        let header: SeedHeader = serde_json::from_slice(&rest[..end]).map_err(|_| SeedError::Unreadable("header"))?;
        if let Some(site) = site.filter(|site| **site != header.site) {
            return Err(SeedError::OtherSite { file: header.site, asked: site.clone() });
        }
        if !later_or_equal(&header.expires_at, now) {
            return Err(SeedError::Expired {
                site: header.site,
                created_at: header.created_at,
                expires_at: header.expires_at,
            });
        }
        let mut pages = Vec::new();
        let mut at = &rest[end + 1..];
        while !at.is_empty() {
            let (len, tail) = at.split_first_chunk::<4>().ok_or(SeedError::Unreadable("pages"))?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(SeedError::Unreadable("pages"));
            }
            let (page, tail) = tail.split_at(len);
            pages.push(page);
            at = tail;
        }
        if pages.len() as u64 != header.pages {
            return Err(SeedError::Unreadable("pages"));
        }
        Ok(Seed { header, pages })
    }

    /// How many pages the file holds.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Page `i`, decoded (bounded as a pulled page is).
    pub fn page(&self, i: usize) -> Result<PullResponse, SeedError> {
        crate::decompress(self.pages[i])
            .ok()
            .and_then(|json| crate::decode_pull(&json).ok())
            .ok_or(SeedError::Unreadable("pages"))
    }
}

/// Whether RFC 3339 time `a` is at or after `b` (a time that cannot be read is in the past).
fn later_or_equal(a: &str, b: &str) -> bool {
    match (a.parse::<jiff::Timestamp>(), b.parse::<jiff::Timestamp>()) {
        (Ok(a), Ok(b)) => a >= b,
        _ => false,
    }
}

/// When a seed made at `now` expires.
pub fn expiry_of(now: &str) -> String {
    let at = now.parse::<jiff::Timestamp>().unwrap_or_else(|_| jiff::Timestamp::now());
    let later = at.checked_add(jiff::SignedDuration::from_hours(24 * VALID_DAYS)).unwrap_or(at);
    crate::rfc3339(later)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_pull_response;

    fn header(pages: u64) -> SeedHeader {
        SeedHeader {
            site: SiteId::from("north"),
            central: SiteId::from("central"),
            central_url: "http://central.example:8080".into(),
            password: "secret".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            expires_at: expiry_of("2026-12-01T00:00:00Z"),
            position: Cursor::Log { after: Seq(7), after_xid: 0 },
            acked: Seq(0),
            records: 0,
            pages,
        }
    }

    fn file() -> Vec<u8> {
        let mut writer = SeedWriter::new(&header(2));
        for _ in 0..2 {
            writer.page(&encode_pull_response(
                &[],
                &Cursor::Log { after: Seq(7), after_xid: 0 },
                0,
                None,
                crate::PageFormat::Columns,
            ));
        }
        writer.finish()
    }

    const NOW: &str = "2026-12-02T00:00:00Z";

    #[test]
    fn a_whole_file_reads_back() {
        let bytes = file();
        let seed = Seed::read(&bytes, Some(&SiteId::from("north")), NOW).expect("a good file");
        assert_eq!(seed.header, header(2));
        assert_eq!(seed.page_count(), 2);
        assert!(seed.page(1).expect("a page").changes.is_empty());
    }

    #[test]
    fn any_damage_anywhere_is_found() {
        let bytes = file();
        for at in [MAGIC.len() + 3, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            let err = Seed::read(&damaged, None, NOW).expect_err("damaged");
            assert!(matches!(err, SeedError::Damaged), "byte {at}: {err}");
        }
        for len in [MAGIC.len() + 10, bytes.len() - 1] {
            let err = Seed::read(&bytes[..len], None, NOW).expect_err("truncated");
            assert!(matches!(err, SeedError::Damaged), "cut at {len}: {err}");
        }
        assert!(matches!(Seed::read(b"PK\x03\x04", None, NOW), Err(SeedError::NotASeed)));
    }

    #[test]
    fn another_site_or_an_expired_file_is_refused() {
        let bytes = file();
        let err = Seed::read(&bytes, Some(&SiteId::from("south")), NOW).expect_err("another site");
        assert_eq!(err.to_string(), "this seed file is for site `north`, not `south`; use the file made for `south`");
        let err = Seed::read(&bytes, None, "2027-01-01T00:00:00Z").expect_err("expired");
        assert!(matches!(err, SeedError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired at 2026-12-31T00:00:00Z"), "{err}");
    }
}
