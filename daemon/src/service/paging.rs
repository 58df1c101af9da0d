//! Pagination of the list RPCs (ListHandles, ListServers, ListTransports, ListProcesses).
//!
//! A request's `page_size` and `page_token` become a [`Page`]; the loop thread takes the
//! items above [`Page::after`] with [`Page::take`], and the service answers with
//! [`Page::next_token`].
//!
//! # Invariants
//! - Items come by ascending id; a token names the last id returned, so items created or
//!   forgotten between pages neither repeat nor shift the walk.
//! - A token carries a hash of its query (the RPC and every filter of the request, but not
//!   the page size): a token from another query, or one that does not parse, is
//!   INVALID_ARGUMENT naming `page_token`.
//! - The last page has an empty token: a token is only given when another item follows.

use std::hash::{DefaultHasher, Hash, Hasher};

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
            query,
        })
    }

    /// One page of `items` (ids ascending) with ids above [`Page::after`], and the id
    /// to resume after when more follow.
    pub fn take<T>(&self, items: impl IntoIterator<Item = (u64, T)>) -> (Vec<T>, Option<u64>) {
        let mut page = Vec::new();
        let mut last = self.after;
        for (id, item) in items.into_iter().filter(|(id, _)| *id > self.after) {
            if page.len() == self.size {
                return (page, Some(last));
            }
            page.push(item);
            last = id;
        }
        (page, None)
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
        let (got, next) = page.take(std::iter::empty::<(u64, ())>());
        assert!(got.is_empty());
        assert_eq!(next, None);
    }
}
