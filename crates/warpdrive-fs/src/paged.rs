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
