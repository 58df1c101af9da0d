//! Pagination of the list RPCs (ListHandles, ListServers, ListTransports, ListProcesses,
//! ListDatagramEndpoints).
//!
//! A request's `page_size` and `page_token` become a [`Page`]; the loop thread takes the
//! items above [`Page::after`] with [`Page::take`], and the service answers with
//! [`Page::next_token`].
//!
//! # Invariants
//! - Items come by ascending id; a token names the last id returned, so items created or
//!   forgotten between pages neither repeat nor shift the walk.
//! - A token carries a hash of its query (the RPC, the loop, where the empty name is
//!   `default`, and every filter of the request, but not the page size): a token from
//!   another query, or one that does not parse, is INVALID_ARGUMENT naming `page_token`.
//! - The last page has an empty token: a token is only given when another item follows.
//! - A page also ends early rather than pass its byte budget ([`Page::within`], 7/8 of
//!   the daemon's message limit), so a list of big items (long argvs, big payloads) never
//!   makes one response too large to send. Only a page of one item may pass it: that
//!   item alone is over the limit, and the response fails RESOURCE_EXHAUSTED.

use std::hash::{DefaultHasher, Hash, Hasher};

use prost::Message;

use crate::status::{Error, Result};

/// The page size used when a request's `page_size` is 0.
pub const DEFAULT_PAGE: usize = 1000;
/// The largest page; a larger `page_size` is cut to this.
pub const MAX_PAGE: usize = 10_000;

/// Which page of a query to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only ids above this one; 0 on the first page.
    pub after: u64,
    /// Most items to return (1 to [`MAX_PAGE`]).
    pub size: usize,
    /// Most encoded bytes of items in one page (but for a page of one item).
    pub max_bytes: usize,
    /// The hash of the query the tokens belong to.
    query: u64,
}

impl Page {
    /// The page a request asks for. `query` is the RPC's name and its filters, hashed.
    /// Fails with INVALID_ARGUMENT naming `page_token` for a token that does not parse
    /// or comes from another query.
    pub fn new(query: impl Hash, page_size: u32, page_token: &str) -> Result<Page> {
        let mut hasher = DefaultHasher::new();
        query.hash(&mut hasher);
        let query = hasher.finish();
        Ok(Page {
            after: parse_page_token(page_token, query)?,
            size: page_size_of(page_size),
            max_bytes: usize::MAX,
            query,
        })
    }

    /// The same page, ending early before its items' encoded size passes 7/8 of
    /// `max_message_bytes` (the rest is room for the token and the other fields).
    pub fn within(self, max_message_bytes: usize) -> Page {
        Page {
            max_bytes: max_message_bytes - max_message_bytes / 8,
            ..self
        }
    }

    /// One page of `items` (ids ascending) with ids above [`Page::after`], and the id
    /// to resume after when more follow. Items are converted lazily: pass an iterator
    /// that builds them, and only a page's worth (and one more) is built.
    pub fn take<T: Message>(
        &self,
        items: impl IntoIterator<Item = (u64, T)>,
    ) -> (Vec<T>, Option<u64>) {
        let (mut page, mut bytes, mut last) = (Vec::new(), 0usize, self.after);
        for (id, item) in items.into_iter().filter(|(id, _)| *id > self.after) {
            let len = encoded_field_len(&item);
            if page.len() == self.size || (!page.is_empty() && bytes + len > self.max_bytes) {
                return (page, Some(last));
            }
            page.push(item);
            bytes += len;
            last = id;
        }
        (page, None)
    }

    /// How many items a page may hold: its size, plus one to see whether more follow.
    pub fn fetch(&self) -> usize {
        self.size.saturating_add(1)
    }

    /// The response's `next_page_token`: empty when `next` is None (the last page).
    pub fn next_token(&self, next: Option<u64>) -> String {
        next.map(|last| page_token(last, self.query))
            .unwrap_or_default()
    }

    /// The ids a page starts from, for a `BTreeMap::range`.
    pub fn range(&self) -> std::ops::RangeFrom<u64> {
        self.after.saturating_add(1)..
    }
}

impl super::Api {
    /// The page a list request of `rpc` on `loop_name` asks for, within the daemon's
    /// message limit; `filters` are the request's other query fields. The empty loop name
    /// and `default` are one loop, and one query. Fails as [`Page::new`].
    pub(super) fn page(
        &self,
        rpc: &'static str,
        loop_name: &str,
        filters: impl Hash,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page> {
        let loop_name = if loop_name.is_empty() {
            crate::loops::DEFAULT_LOOP
        } else {
            loop_name
        };
        let page = Page::new((rpc, loop_name, filters), page_size, page_token)?;
        Ok(page.within(self.limits().max_message_bytes))
    }
}

/// The bytes `item` takes as one element of a repeated message field.
fn encoded_field_len(item: &impl Message) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// A request's page size: 0 means [`DEFAULT_PAGE`], and no page exceeds [`MAX_PAGE`].
fn page_size_of(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn page_token(after: u64, query: u64) -> String {
    format!("{after}.{query:016x}")
}

fn parse_page_token(token: &str, query: u64) -> Result<u64> {
    if token.is_empty() {
        return Ok(0);
    }
    let bad = || {
        Error::invalid(
            "page_token",
            format!("{token:?} does not belong to this query"),
        )
    };
    let (after, hash) = token.split_once('.').ok_or_else(bad)?;
    let after: u64 = after.parse().map_err(|_| bad())?;
    if hash != format!("{query:016x}") {
        return Err(bad());
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_belong_to_their_query() {
        let token = page_token(42, 7);
        assert_eq!(parse_page_token(&token, 7).unwrap(), 42);
        assert_eq!(parse_page_token("", 7).unwrap(), 0);
        assert!(parse_page_token(&token, 8).is_err(), "other query");
        for bad in ["x", "1.zz", "nope.0000000000000007", ".0000000000000007"] {
            let err = parse_page_token(bad, 7).unwrap_err().to_string();
            assert!(err.contains("page_token") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        for (requested, size) in [(0, DEFAULT_PAGE), (1, 1), (3, 3), (10_000, MAX_PAGE)] {
            assert_eq!(page_size_of(requested), size, "{requested}");
        }
        assert_eq!(page_size_of(u32::MAX), MAX_PAGE);
    }

    #[test]
    fn a_token_belongs_to_the_query_it_came_from() {
        let first = Page::new(("ListTransports", "", 1u64), 2, "").unwrap();
        let token = first.next_token(Some(5));
        let next = Page::new(("ListTransports", "", 1u64), 9, &token).unwrap();
        assert_eq!(next.after, 5, "the page size is not part of the query");
        for other in [
            Page::new(("ListTransports", "", 2u64), 2, &token),
            Page::new(("ListServers", "", 1u64), 2, &token),
        ] {
            let err = other.unwrap_err().to_string();
            assert!(err.contains("page_token"), "{err}");
        }
        assert_eq!(first.next_token(None), "", "the last page has no token");
    }

    #[test]
    fn pages_walk_every_id_once() {
        let ids = [1u64, 2, 4, 8, 9, 10, 11];
        // (page size, the pages' ids)
        let cases: [(u32, &[&[u64]]); 4] = [
            (3, &[&[1, 2, 4], &[8, 9, 10], &[11]]),
            (7, &[&[1, 2, 4, 8, 9, 10, 11]]),
            (1, &[&[1], &[2], &[4], &[8], &[9], &[10], &[11]]),
            (0, &[&[1, 2, 4, 8, 9, 10, 11]]),
        ];
        for (size, pages) in cases {
            let mut page = Page::new("q", size, "").unwrap();
            for (n, want) in pages.iter().enumerate() {
                let (got, next) = page.take(ids.iter().map(|id| (*id, *id)));
                assert_eq!(&got, want, "size {size}, page {n}");
                assert_eq!(
                    next.is_none(),
                    n + 1 == pages.len(),
                    "size {size}, page {n}"
                );
                page.after = next.unwrap_or(u64::MAX);
            }
        }
    }

    #[test]
    fn an_empty_list_is_one_empty_last_page() {
        let page = Page::new("q", 3, "").unwrap();
        let (got, next) = page.take(std::iter::empty::<(u64, u64)>());
        assert!(got.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn a_page_ends_before_it_passes_its_byte_budget() {
        // Each item is a 100-byte StringValue: 104 bytes as a repeated field.
        let item = "x".repeat(100);
        assert_eq!(encoded_field_len(&item), 104);
        // (message limit, the pages' sizes)
        let cases: [(usize, &[usize]); 4] = [
            (4 << 20, &[7]),
            (360, &[3, 3, 1]), // budget 315: 3 items (312 bytes) fit, 4 do not
            (200, &[1, 1, 1, 1, 1, 1, 1]),
            (16, &[1, 1, 1, 1, 1, 1, 1]), // one item over the budget still goes alone
        ];
        for (limit, sizes) in cases {
            let mut page = Page::new("q", 0, "").unwrap().within(limit);
            let mut got_sizes = Vec::new();
            loop {
                let items = (1..=7u64).map(|id| (id, item.clone()));
                let (got, next) = page.take(items);
                got_sizes.push(got.len());
                match next {
                    Some(last) => page.after = last,
                    None => break,
                }
            }
            assert_eq!(got_sizes, sizes, "limit {limit}");
        }
    }
}
