//! Delimited listings a page at a time. object_store's `list_with_delimiter` returns a
//! directory whole, so a directory of 10^6 keys sat in memory twice (the store's metadata and
//! ours) before its first entry was known; a [`PagedList`] hands it over in pages of about a
//! thousand keys that the listing consumes as they come.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{ListResult, Result};

/// Keys per page where the source has no page size of its own (the local store).
pub const PAGE_KEYS: usize = 1000;

/// Keys in the first such page: each key of a local page costs a `stat` (cold, a disk read),
/// so the first page is small and the kernel's first readdir reply (about 200 entries)
/// comes quickly; each next page doubles, up to [`PAGE_KEYS`].
pub const FIRST_PAGE_KEYS: usize = 128;

/// Keys in page `n` (from 0) of a local listing.
pub fn page_keys(n: u32) -> usize {
    FIRST_PAGE_KEYS
        .saturating_mul(1usize.checked_shl(n).unwrap_or(usize::MAX))
        .min(PAGE_KEYS)
}

/// Pages a local listing of `keys` keys takes: every full page, then the last one (which
/// may be empty).
pub fn pages_for(keys: usize) -> u32 {
    let (mut full, mut covered) = (0u32, 0usize);
    while covered + page_keys(full) <= keys {
        covered += page_keys(full);
        full += 1;
    }
    full + 1
}

/// A store that can list one level of a prefix page by page.
pub trait PagedList: fmt::Debug + Send + Sync {
    /// The pages of the delimited listing of `prefix` (its objects and common prefixes).
    fn list_pages(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ListResult>>;
}

/// object_store's paginated LIST (S3, GCS): one request per page, continued by its token.
pub struct Paginated(pub Arc<dyn PaginatedListStore>);

impl fmt::Debug for Paginated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Paginated")
    }
}

impl PagedList for Paginated {
    fn list_pages(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ListResult>> {
        // Unlike `list_with_delimiter`, the paginated call does not add the delimiter itself.
        let prefix = prefix
            .map(|p| format!("{}/", p.as_ref()))
            .filter(|p| p != "/");
        let store = self.0.clone();
        // State: the token of the next page; `None` once the last page was returned.
        stream::try_unfold(Some(None::<String>), move |token| {
            let (store, prefix) = (store.clone(), prefix.clone());
            async move {
                let Some(page_token) = token else {
                    return Ok(None);
                };
                let options = PaginatedListOptions {
                    delimiter: Some("/".into()),
                    page_token,
                    ..Default::default()
                };
                let page = store.list_paginated(prefix.as_deref(), options).await?;
                let next = page.page_token.map(Some);
                Ok(Some((page.result, next)))
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_pages_start_small_and_double_up_to_the_page_size() {
        let sizes: Vec<usize> = (0..6).map(page_keys).collect();
        assert_eq!(sizes, [128, 256, 512, 1000, 1000, 1000]);
        assert_eq!(page_keys(u32::MAX), PAGE_KEYS);
        assert_eq!(pages_for(0), 1);
        assert_eq!(pages_for(127), 1);
        assert_eq!(pages_for(128), 2, "a full page, then an empty last one");
        assert_eq!(pages_for(2500), 5);
    }
}
