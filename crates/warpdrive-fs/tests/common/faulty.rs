//! A failure double at the object-store seam: wraps a real store and, on demand, stalls,
//! fails, adds latency, cuts bodies short or reports the object as changed, the way a
//! misbehaving S3 endpoint would. The knobs change while a mount is live.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// What to do wrong. Every knob is off by default.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Never answer GETs and listings (a stopped server with the connection open).
    pub(crate) stall: AtomicBool,
    /// Fail this many GETs from now on with a server error.
    pub(crate) fail_gets: AtomicU32,
    /// Added to every call.
    pub(crate) latency_ms: AtomicU64,
    /// End every GET body after this many bytes (0: whole bodies).
    pub(crate) truncate_at: AtomicU64,
    /// Answer conditional GETs as if the object had changed (HTTP 412).
    pub(crate) changed: AtomicBool,
    /// GETs seen.
    pub(crate) gets: AtomicU64,
    /// List objects without their ETag (as some S3-compatible servers do); HEAD and GET
    /// still carry it.
    pub(crate) list_without_etags: AtomicBool,
}

/// A store that misbehaves as `faults` say.
#[derive(Debug)]
pub(crate) struct Faulty {
    pub(crate) inner: Arc<dyn ObjectStore>,
    pub(crate) faults: Arc<Faults>,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl Faulty {
    async fn before_call(&self) {
        let latency = self.faults.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if self.faults.stall.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.faults.gets.fetch_add(1, Ordering::SeqCst);
        self.before_call().await;
        let failing = self
            .faults
            .fail_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "503 Slow Down (injected)".into(),
            });
        }
        if self.faults.changed.load(Ordering::SeqCst) && options.if_match.is_some() {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: "412 Precondition Failed (injected)".into(),
            });
        }
        let mut result = self.inner.get_opts(location, options).await?;
        let cut = self.faults.truncate_at.load(Ordering::SeqCst);
        if cut > 0 {
            let (meta, range) = (result.meta.clone(), result.range.clone());
            let stream = result.into_stream();
            let mut left = cut as usize;
            let short = stream
                .map(move |chunk| {
                    chunk.map(|mut bytes| {
                        bytes.truncate(left.min(bytes.len()));
                        left -= bytes.len();
                        bytes
                    })
                })
                .take_while(|chunk| {
                    std::future::ready(chunk.as_ref().map_or(true, |b| !b.is_empty()))
                })
                .boxed();
            result = GetResult {
                payload: GetResultPayload::Stream(short),
                range,
                meta,
                attributes: Default::default(),
                extensions: Default::default(),
            };
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before_call().await;
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        if self.faults.list_without_etags.load(Ordering::SeqCst) {
            for object in &mut listed.objects {
                object.e_tag = None;
            }
        }
        Ok(listed)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
