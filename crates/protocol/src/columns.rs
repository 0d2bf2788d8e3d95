//! Pull pages written column by column: most of a page's bytes are the same field names, table
//! names, origins and actions repeated in every change, which a compressor can shorten but not
//! remove. Here consecutive changes of one table, origin and action whose documents have the
//! same fields in the same order form a **group**: the field names are written once, and each
//! field's values follow one another (codes beside codes, prices beside prices), which zstd
//! compresses far better than the same values interleaved with everything else.
//!
//! ```text
//! {"groups":[{"t":"item","o":"central","a":"upsert",
//!             "s":[1001,1,1],                  first position, then differences
//!             "w":4,"j":"id-aid-bid-c",        ids of one length, end to end (else "i":[…])
//!             "k":["code","name"],             the documents' fields, in their order
//!             "v":[["A1","A2","A3"],["Amoxicillin","Zinc","ORS"]]},
//!            {"t":"item", ..., "d":[{"code":"A4","name":"x","new":1}]}],  documents as they are
//!  "next":{...},"remaining":0,"acked":12}
//! ```
//!
//! Ids of one length in plain ASCII (random hex ids, as most catalogues have) travel end to end
//! in one string, `w` bytes each: no quotes or commas between them, which saves about a twentieth
//! of the catalogue's bytes on the wire. Any other ids travel as a list, `i`.
//!
//! A document is split only when writing its fields back gives exactly its stored text (compact
//! JSON, as every writer here produces); any other document travels whole in `d`, so what a site
//! stores is byte for byte what the central server holds. A group holds at most
//! [`GROUP_CHANGES`] changes and about [`GROUP_BYTES`] of records: a page cut on a slow link
//! keeps every group that arrived whole.

use crate::{Cursor, OutgoingChange, PullResponse};
use model::{Action, Change, RecordId, Seq, SiteId};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::io::Write;

/// How a page written by this module begins (a page of whole changes begins `{"changes":`).
pub const PREFIX: &[u8] = b"{\"groups\":[";
/// The most changes in one group. Longer columns compress better (a zstd block then holds one
/// column's values rather than a little of each: 4,096 catalogue items to a group send 9% fewer
/// bytes than 256), and a page sized for a slow link holds few groups anyway.
pub const GROUP_CHANGES: usize = 4_096;
/// A group ends once it holds this many bytes of records: what a page cut on its way loses at
/// most (about 60 KiB on the wire for the catalogue's items).
pub const GROUP_BYTES: usize = 512 * 1024;

/// A page's JSON, column by column, as [`parse_page`] reads it back.
pub fn page_json(changes: &[OutgoingChange], next: &Cursor, remaining: u64, acked: Option<Seq>) -> Vec<u8> {
    json_of(changes, next, remaining, acked, GroupLimit { changes: GROUP_CHANGES, bytes: GROUP_BYTES })
}

/// A page's JSON for a file, which is never cut on its way: each run of alike changes is one
/// group however long, and compresses better (the seed file is about a tenth smaller than the
/// same pages on the wire).
pub fn file_page_json(changes: &[OutgoingChange], next: &Cursor, remaining: u64, acked: Option<Seq>) -> Vec<u8> {
    json_of(changes, next, remaining, acked, GroupLimit { changes: usize::MAX, bytes: usize::MAX })
}

/// Where a group ends at the latest.
#[derive(Clone, Copy)]
struct GroupLimit {
    changes: usize,
    bytes: usize,
}

fn json_of(
    changes: &[OutgoingChange],
    next: &Cursor,
    remaining: u64,
    acked: Option<Seq>,
    limit: GroupLimit,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(changes.iter().map(|c| c.data.as_ref().map_or(0, String::len) + 48).sum::<usize>() + 128);
    // Writing into memory cannot fail.
    let _ = write_page(&mut out, changes, next, remaining, acked, limit);
    out
}

fn write_page(
    out: &mut Vec<u8>,
    changes: &[OutgoingChange],
    next: &Cursor,
    remaining: u64,
    acked: Option<Seq>,
    limit: GroupLimit,
) -> std::io::Result<()> {
    out.write_all(PREFIX)?;
    let split: Vec<Option<Fields<'_>>> = changes.iter().map(|c| c.data.as_deref().and_then(Fields::of)).collect();
    let mut start = 0;
    let mut first = true;
    while start < changes.len() {
        let end = group_end(changes, &split, start, limit);
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        write_group(out, &changes[start..end], &split[start..end])?;
        start = end;
    }
    out.write_all(b"],\"next\":")?;
    serde_json::to_writer(&mut *out, next)?;
    write!(out, ",\"remaining\":{remaining}")?;
    if let Some(acked) = acked {
        write!(out, ",\"acked\":{}", acked.0)?;
    }
    out.write_all(b"}")
}

/// Where the group that begins at `start` ends: the changes after it share its table, origin,
/// action and shape (the same fields, or documents sent whole), up to `limit`.
fn group_end(changes: &[OutgoingChange], split: &[Option<Fields<'_>>], start: usize, limit: GroupLimit) -> usize {
    let head = &changes[start];
    let shape = |i: usize| -> (bool, Option<&[&str]>) {
        (changes[i].data.is_some(), split[i].as_ref().map(|f| f.keys.as_slice()))
    };
    let head_shape = shape(start);
    let mut end = start + 1;
    let mut bytes = head.data.as_ref().map_or(0, String::len);
    while end < changes.len() && end - start < limit.changes && bytes < limit.bytes {
        let c = &changes[end];
        bytes += c.data.as_ref().map_or(0, String::len);
        if c.table != head.table || c.origin != head.origin || c.action != head.action || shape(end) != head_shape {
            break;
        }
        end += 1;
    }
    end
}

fn write_group(out: &mut Vec<u8>, changes: &[OutgoingChange], split: &[Option<Fields<'_>>]) -> std::io::Result<()> {
    let head = &changes[0];
    out.write_all(b"{\"t\":")?;
    serde_json::to_writer(&mut *out, &head.table)?;
    out.write_all(b",\"o\":")?;
    serde_json::to_writer(&mut *out, &head.origin)?;
    out.write_all(b",\"a\":")?;
    serde_json::to_writer(&mut *out, &head.action)?;
    out.write_all(b",\"s\":[")?;
    let mut previous = 0i64;
    for (i, change) in changes.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write!(out, "{}", change.seq.0.wrapping_sub(previous))?;
        previous = change.seq.0;
    }
    match packed_width(changes) {
        Some(width) => {
            write!(out, "],\"w\":{width},\"j\":\"")?;
            for change in changes {
                out.write_all(change.id.as_str().as_bytes())?;
            }
            out.write_all(b"\"")?;
        }
        None => {
            out.write_all(b"],\"i\":[")?;
            for (i, change) in changes.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, &change.id)?;
            }
            out.write_all(b"]")?;
        }
    }
    match &split[0] {
        Some(fields) => {
            out.write_all(b",\"k\":")?;
            serde_json::to_writer(&mut *out, &fields.keys)?;
            out.write_all(b",\"v\":[")?;
            for column in 0..fields.keys.len() {
                if column > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(b"[")?;
                for (row, fields) in split.iter().enumerate() {
                    if row > 0 {
                        out.write_all(b",")?;
                    }
                    // Every row of the group has these fields (its shape is the group's).
                    out.write_all(fields.as_ref().map_or("null", |f| f.values[column]).as_bytes())?;
                }
                out.write_all(b"]")?;
            }
            out.write_all(b"]")?;
        }
        None if head.data.is_some() => {
            out.write_all(b",\"d\":[")?;
            for (i, change) in changes.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                out.write_all(change.data.as_deref().unwrap_or("null").as_bytes())?;
            }
            out.write_all(b"]")?;
        }
        None => {}
    }
    out.write_all(b"}")
}

/// The one length of the group's ids, when they can travel end to end: all that long, and in
/// printable ASCII that a JSON string holds as it is (no `"` or `\\`).
fn packed_width(changes: &[OutgoingChange]) -> Option<usize> {
    let width = changes[0].id.as_str().len();
    let plain =
        |id: &str| id.len() == width && id.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    (width > 0 && changes.len() > 1 && changes.iter().all(|c| plain(c.id.as_str()))).then_some(width)
}

/// A document's top-level fields as its own text holds them.
struct Fields<'a> {
    keys: Vec<&'a str>,
    values: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// The fields of `doc`, when writing them back gives `doc` exactly; else `None` (the
    /// document travels whole).
    fn of(doc: &'a str) -> Option<Fields<'a>> {
        let pairs: Pairs<'a> = serde_json::from_str(doc).ok()?;
        let mut fields = Fields { keys: Vec::with_capacity(pairs.0.len()), values: Vec::with_capacity(pairs.0.len()) };
        let mut expected = 2; // the braces
        for (key, value) in pairs.0 {
            // A key with an escape would be written back differently: send the document whole.
            let Cow::Borrowed(key) = key else { return None };
            expected += key.len() + 3 + value.get().len() + usize::from(!fields.keys.is_empty());
            fields.keys.push(key);
            fields.values.push(value.get());
        }
        // Compact text is exactly braces, quoted keys, colons, values and commas: any other
        // length means whitespace (or a repeated key), and the document travels whole.
        (expected == doc.len() && doc.starts_with('{')).then_some(fields)
    }
}

/// An object's members in their order, borrowed from the text.
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Pairs<'de>, M::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(key) = map.next_key::<Borrowed<'de>>()? {
                    pairs.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// A string borrowed from the text when it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Borrowed<'de>, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Borrowed<'de>, E> {
                Ok(Borrowed(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// One group as it travels.
#[derive(Deserialize)]
struct Group<'a> {
    t: String,
    o: SiteId,
    a: Action,
    s: Vec<i64>,
    #[serde(default)]
    i: Option<Vec<RecordId>>,
    /// Ids end to end ([`packed_width`]): each `w` bytes of `j`.
    #[serde(default)]
    w: Option<usize>,
    #[serde(default, borrow)]
    j: Option<Cow<'a, str>>,
    #[serde(default)]
    k: Option<Vec<String>>,
    #[serde(default, borrow)]
    v: Option<Vec<Vec<&'a RawValue>>>,
    #[serde(default, borrow)]
    d: Option<Vec<&'a RawValue>>,
}

impl Group<'_> {
    /// The group's ids, listed or end to end.
    fn ids(&mut self) -> Result<Vec<RecordId>, serde_json::Error> {
        use serde::de::Error;
        match (self.i.take(), self.w, self.j.as_deref()) {
            (Some(ids), None, None) => Ok(ids),
            (None, Some(width), Some(joined)) if width > 0 && joined.len() % width == 0 && joined.is_ascii() => {
                Ok(joined
                    .as_bytes()
                    .chunks(width)
                    .map(|id| RecordId(String::from_utf8_lossy(id).into_owned()))
                    .collect())
            }
            _ => Err(serde_json::Error::custom("a group's ids are neither a list nor one string of ids of one length")),
        }
    }

    /// The group's changes, in order; an error when its columns disagree in length.
    fn into_changes(mut self, out: &mut Vec<Change>) -> Result<(), serde_json::Error> {
        use serde::de::Error;
        let ids = self.ids()?;
        let rows = ids.len();
        if self.s.len() != rows {
            return Err(serde_json::Error::custom("a group's positions and ids differ in number"));
        }
        let columns = match (&self.k, &self.v) {
            (Some(keys), Some(columns)) => {
                if columns.len() != keys.len() || columns.iter().any(|c| c.len() != rows) {
                    return Err(serde_json::Error::custom("a group's columns differ in length"));
                }
                Some((keys.iter().map(serde_json::to_string).collect::<Result<Vec<_>, _>>()?, columns))
            }
            (None, None) => None,
            _ => {
                return Err(serde_json::Error::custom(
                    "a group has field names without values, or values without names",
                ))
            }
        };
        if self.d.as_ref().is_some_and(|d| d.len() != rows) {
            return Err(serde_json::Error::custom("a group's documents and ids differ in number"));
        }
        let mut seq = 0i64;
        for (row, (delta, id)) in self.s.iter().zip(ids).enumerate() {
            seq = seq.wrapping_add(*delta);
            let data = match (&columns, &self.d) {
                (Some((keys, columns)), _) => {
                    let mut doc = String::with_capacity(
                        keys.iter().zip(columns.iter()).map(|(k, c)| k.len() + c[row].get().len() + 2).sum::<usize>()
                            + 2,
                    );
                    doc.push('{');
                    for (j, (key, column)) in keys.iter().zip(columns.iter()).enumerate() {
                        if j > 0 {
                            doc.push(',');
                        }
                        doc.push_str(key);
                        doc.push(':');
                        doc.push_str(column[row].get());
                    }
                    doc.push('}');
                    Some(RawValue::from_string(doc)?)
                }
                (None, Some(docs)) => Some(docs[row].to_owned()),
                (None, None) => None,
            };
            out.push(Change {
                seq: Seq(seq),
                table: self.t.clone(),
                id,
                action: self.a.clone(),
                data,
                origin: self.o.clone(),
            });
        }
        Ok(())
    }
}

/// A page as it travels.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    groups: Vec<Group<'a>>,
    next: Cursor,
    remaining: u64,
    #[serde(default)]
    acked: Option<Seq>,
}

/// Reads a page written by [`page_json`].
pub fn parse_page(json: &[u8]) -> Result<PullResponse, serde_json::Error> {
    let page: Page<'_> = serde_json::from_slice(json)?;
    let mut changes = Vec::with_capacity(page.groups.iter().map(|g| g.s.len()).sum());
    for group in page.groups {
        group.into_changes(&mut changes)?;
    }
    Ok(PullResponse { changes, next: page.next, remaining: page.remaining, acked: page.acked })
}

/// The changes of every group that arrived whole in the first part of a page (after
/// [`PREFIX`]), in order.
pub fn changes_of_cut(mut rest: &[u8]) -> Vec<Change> {
    let mut changes = Vec::new();
    loop {
        let mut parser = serde_json::Deserializer::from_slice(rest).into_iter::<Group<'_>>();
        let Some(Ok(group)) = parser.next() else { return changes };
        let used = parser.byte_offset();
        // A group is whole only when what follows it arrived too (`,` or the end of the list).
        let more = match rest.get(used) {
            Some(b',') => true,
            Some(b']') => false,
            _ => return changes,
        };
        let mut these = Vec::new();
        if group.into_changes(&mut these).is_err() {
            return changes;
        }
        changes.append(&mut these);
        if !more {
            return changes;
        }
        rest = &rest[used + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::LogPos;

    fn change(seq: i64, table: &str, id: &str, action: Action, data: Option<&str>) -> OutgoingChange {
        OutgoingChange {
            seq: Seq(seq),
            table: table.to_owned(),
            id: id.into(),
            action,
            data: data.map(str::to_owned),
            origin: "central".into(),
        }
    }

    fn sample() -> Vec<OutgoingChange> {
        vec![
            change(5, "item", "a", Action::Upsert, Some(r#"{"code":"A1","name":"Zinc","price":1.5}"#)),
            change(6, "item", "b", Action::Upsert, Some(r#"{"code":"A2","name":"Z\"inc","price":2}"#)),
            // Another shape, whitespace, an escaped key: each sent as it is.
            change(9, "item", "c", Action::Upsert, Some(r#"{"code":"A3"}"#)),
            change(10, "item", "d", Action::Upsert, Some(r#"{ "code": "A4" }"#)),
            change(11, "item", "e", Action::Upsert, Some(r#"{"co\u0064e":"A5"}"#)),
            change(12, "item", "f", Action::Delete, None),
            change(13, "name", "g", Action::MergeInto("h".into()), None),
            change(3, "stock_line", "i", Action::Upsert, Some(r#"{"store_id":"s","nested":{"a":[1,2]},"n":null}"#)),
        ]
    }

    fn next() -> Cursor {
        Cursor::log(LogPos::new(0, Seq(13)))
    }

    #[test]
    fn a_page_reads_back_exactly_as_the_changes_were() {
        let changes = sample();
        let json = page_json(&changes, &next(), 4, Some(Seq(7)));
        let page = parse_page(&json).expect("a page");
        assert_eq!(page.changes.len(), changes.len());
        for (read, sent) in page.changes.iter().zip(&changes) {
            assert_eq!(read.seq, sent.seq);
            assert_eq!((read.table.as_str(), read.id.as_str()), (sent.table.as_str(), sent.id.as_str()));
            assert_eq!(read.action, sent.action);
            assert_eq!(read.data.as_ref().map(|d| d.get()), sent.data.as_deref(), "byte for byte");
            assert_eq!(read.origin, sent.origin);
        }
        assert_eq!((page.next, page.remaining, page.acked), (next(), 4, Some(Seq(7))));
    }

    #[test]
    fn field_names_travel_once_per_group() {
        let changes: Vec<_> = (0..100)
            .map(|i| {
                change(i, "item", &format!("id-{i}"), Action::Upsert, Some(&format!(r#"{{"code":"C{i}","name":"N"}}"#)))
            })
            .collect();
        let json = String::from_utf8(page_json(&changes, &next(), 0, None)).expect("text");
        assert_eq!(json.matches("\"code\"").count(), 1, "{json}");
        assert_eq!(json.matches("\"groups\"").count(), 1);
    }

    #[test]
    fn groups_are_bounded_and_a_cut_page_keeps_the_whole_ones() {
        let changes: Vec<_> = (0..(GROUP_CHANGES as i64 * 3))
            .map(|i| change(i + 1, "item", &format!("id-{i}"), Action::Upsert, Some(r#"{"code":"C"}"#)))
            .collect();
        let json = page_json(&changes, &next(), 0, None);
        let body = &json[PREFIX.len()..];
        let second_group_ends = body.windows(6).filter(|w| *w == b"]]},{\"").count();
        assert_eq!(second_group_ends, 2, "three groups");
        // Cut inside the third group: two whole groups survive.
        let third = body.windows(6).rposition(|w| w == b"},{\"t\"").expect("a third group") + 2;
        let cut = changes_of_cut(&body[..third + 40]);
        assert_eq!(cut.len(), 2 * GROUP_CHANGES);
        assert_eq!(cut.last().map(|c| c.seq), Some(Seq(2 * GROUP_CHANGES as i64)));
        assert!(changes_of_cut(&body[..10]).is_empty());
        assert_eq!(changes_of_cut(body).len(), 3 * GROUP_CHANGES);
    }

    #[test]
    fn a_file_page_is_one_group_per_run_and_reads_back_alike() {
        let changes: Vec<_> = (0..(GROUP_CHANGES as i64 * 2))
            .map(|i| change(i + 1, "item", &format!("id-{i}"), Action::Upsert, Some(r#"{"code":"C"}"#)))
            .chain(sample())
            .collect();
        let file = file_page_json(&changes, &next(), 0, None);
        let wire = page_json(&changes, &next(), 0, None);
        let groups = |json: &[u8]| String::from_utf8_lossy(json).matches("{\"t\":").count();
        assert_eq!(groups(&wire), groups(&file) + 1, "the long run is one group in the file, two on the wire");
        let (file, wire) = (parse_page(&file).expect("a file page"), parse_page(&wire).expect("a wire page"));
        let texts = |p: &PullResponse| {
            p.changes.iter().map(|c| (c.seq, c.data.as_ref().map(|d| d.get().to_owned()))).collect::<Vec<_>>()
        };
        assert_eq!(texts(&file), texts(&wire));
    }

    #[test]
    fn ids_of_one_length_travel_end_to_end_and_others_as_a_list() {
        let hex = |i: usize| format!("{i:032x}");
        let changes: Vec<_> =
            (0..10).map(|i| change(i as i64 + 1, "item", &hex(i), Action::Upsert, Some(r#"{"code":"C"}"#))).collect();
        let json = String::from_utf8(page_json(&changes, &next(), 0, None)).expect("text");
        assert!(json.contains(&format!(r#""w":32,"j":"{}{}"#, hex(0), hex(1))), "{json}");
        let read = parse_page(json.as_bytes()).expect("a page");
        assert_eq!(
            read.changes.iter().map(|c| c.id.to_string()).collect::<Vec<_>>(),
            (0..10).map(hex).collect::<Vec<_>>()
        );
        // Lengths that differ, a quote, a backslash, a character beyond ASCII: a list.
        for odd in [
            "short",
            "0000000000000000000000000000000\"",
            "0000000000000000000000000000000\\",
            "000000000000000000000000000000é",
        ] {
            let mut changes = changes.clone();
            changes[3].id = odd.into();
            let json = String::from_utf8(page_json(&changes, &next(), 0, None)).expect("text");
            assert!(json.contains(r#""i":["#) && !json.contains(r#""j":"#), "{odd}: {json}");
            assert_eq!(parse_page(json.as_bytes()).expect("a page").changes[3].id.as_str(), odd);
        }
    }

    #[test]
    fn a_group_whose_columns_disagree_is_refused() {
        let page = |group: &str| {
            format!(r#"{{"groups":[{group}],"next":{},"remaining":0}}"#, serde_json::to_string(&next()).expect("json"))
        };
        let good = page(r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"i":["a","b"],"k":["x"],"v":[[1,2]]}"#);
        assert_eq!(parse_page(good.as_bytes()).expect("a page").changes.len(), 2);
        for bad in [
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"i":["a","b"],"k":["x"],"v":[[1]]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"i":["a","b"],"k":["x","y"],"v":[[1,2]]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1],"i":["a","b"]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"i":["a","b"],"k":["x"]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"i":["a","b"],"d":[{}]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"w":2,"j":"abc"}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"w":0,"j":""}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1],"w":1,"j":"ab","i":["a","b"]}"#,
            r#"{"t":"item","o":"c","a":"upsert","s":[1,1,1],"w":1,"j":"ab"}"#,
        ] {
            assert!(parse_page(page(bad).as_bytes()).is_err(), "{bad}");
        }
    }
}
