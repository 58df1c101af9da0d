//! Pages of the list RPCs (ListServers, ListTransports, ListProcesses, ListDatagramEndpoints),
//! and following them.
//!
//! The daemon answers a list a page at a time, by ascending id, with a token naming
//! where the next page starts. `Client::list_*_page` get one page; the plain
//! `Client::list_*` methods follow every page with [`all_pages`].
//!
//! # Invariants
//! - A token is only good for the query it came from (same loop and filters); the daemon
//!   answers INVALID_ARGUMENT for another query's token.
//! - The last page has no token; [`all_pages`] stops there, and nowhere else.

use std::future::Future;

use crate::Result;

/// Which page of a list to get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items per page; 0: the daemon's default (1000). The daemon caps it at 10000.
    pub page_size: u32,
    /// The previous page's [`Page::next_page_token`]; None: the first page.
    pub page_token: Option<String>,
}

impl PageRequest {
    /// The first page, of `page_size` items (0: the daemon's default).
    pub fn first(page_size: u32) -> Self {
        PageRequest {
            page_size,
            page_token: None,
        }
    }

    /// The request's `page_token` on the wire: empty for the first page.
    pub(crate) fn token(&self) -> String {
        self.page_token.clone().unwrap_or_default()
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, by ascending id.
    pub items: Vec<T>,
    /// The token for the next page; None on the last page.
    pub next_page_token: Option<String>,
}

/// A response's `next_page_token`: an empty one means the last page.
pub(crate) fn next_token(wire: String) -> Option<String> {
    Some(wire).filter(|t| !t.is_empty())
}

/// Every item of a list: asks `fetch` for pages of `page_size` (0: the daemon's default),
/// following their tokens to the last page. Fails with the first page's error.
///
/// ```no_run
/// # async fn demo(client: loopd_client::Client) -> loopd_client::Result<()> {
/// use loopd_client::all_pages;
/// let procs = all_pages(100, |page| client.list_processes_page("", page)).await?;
/// println!("{} processes", procs.len());
/// # Ok(())
/// # }
/// ```
pub async fn all_pages<T, F, Fut>(page_size: u32, fetch: F) -> Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    pages_from(PageRequest::first(page_size), fetch).await
}

/// The items of `request`'s page and of every page after it, as [`all_pages`].
pub(crate) async fn pages_from<T, F, Fut>(mut request: PageRequest, mut fetch: F) -> Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    let mut items = Vec::new();
    loop {
        let page = fetch(request.clone()).await?;
        items.extend(page.items);
        match page.next_page_token {
            Some(token) => request.page_token = Some(token),
            None => return Ok(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_pages_follows_tokens_to_the_last_page() {
        let pages = [
            (vec![1, 2], Some("a")),
            (vec![3, 4], Some("b")),
            (vec![5], None),
        ];
        let mut asked = Vec::new();
        let items = all_pages(2, |request| {
            asked.push(request.clone());
            let n = asked.len() - 1;
            let (items, token) = pages[n].clone();
            async move {
                Ok(Page {
                    items,
                    next_page_token: token.map(String::from),
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(items, [1, 2, 3, 4, 5]);
        let tokens: Vec<_> = asked.iter().map(|r| r.page_token.as_deref()).collect();
        assert_eq!(tokens, [None, Some("a"), Some("b")]);
        assert!(asked.iter().all(|r| r.page_size == 2));
    }

    #[test]
    fn an_empty_wire_token_is_the_last_page() {
        for (wire, token) in [("", None), ("7.ab", Some("7.ab"))] {
            assert_eq!(next_token(wire.into()).as_deref(), token, "{wire:?}");
        }
    }
}
