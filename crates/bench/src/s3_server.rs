//! `bench s3-server`: a small, fast S3 server for the FUSE benchmark, on the `s3s` protocol
//! library. It serves one directory as one read-only bucket, reading files in 1 MiB pieces
//! (moto reads the whole object for every ranged GET, and `s3s-fs` 0.14 reads 4 KiB at a
//! time, so neither measures a client). ETags come from each file's size and mtime, so no
//! byte is hashed; `If-Match` is honoured, listings page with continuation tokens, and
//! requests must be signed with the configured key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::dto::{
    CommonPrefix, ETag, ETagCondition, GetBucketLocationInput, GetBucketLocationOutput,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output,
    Object, StreamingBlob, Timestamp,
};
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes per read of a file being sent.
const READ: usize = 1 << 20;

/// One directory entry as a listing shows it.
#[derive(Debug, Clone)]
struct Entry {
    /// The name, with a trailing `/` for a directory.
    name: String,
    size: u64,
    modified: SystemTime,
}

/// A directory's sorted entries and the directory's mtime when they were read.
type Listed = (SystemTime, Arc<Vec<Entry>>);

/// The bucket: a directory, with each directory's sorted listing kept while its mtime holds
/// (paging through 10^6 entries must not read and sort the directory once per page).
struct Bucket {
    name: String,
    root: PathBuf,
    listings: Mutex<HashMap<PathBuf, Listed>>,
}

/// A strong ETag from a file's size and mtime.
fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{len:x}")
}

/// [`etag`] of a file's metadata.
fn etag_of(meta: &std::fs::Metadata) -> String {
    etag(
        meta.len(),
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

impl Bucket {
    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if bucket == self.name {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket))
        }
    }

    /// The file a key names; keys that leave the directory are no keys.
    fn path_of(&self, bucket: &str, key: &str) -> S3Result<PathBuf> {
        self.check_bucket(bucket)?;
        let mut path = self.root.clone();
        for part in key.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(s3_error!(NoSuchKey));
            }
            path.push(part);
        }
        Ok(path)
    }

    fn metadata(&self, bucket: &str, key: &str) -> S3Result<(PathBuf, std::fs::Metadata)> {
        let path = self.path_of(bucket, key)?;
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok((path, meta)),
            _ => Err(s3_error!(NoSuchKey)),
        }
    }

    fn listing(&self, dir: &Path) -> S3Result<Arc<Vec<Entry>>> {
        let Ok(meta) = std::fs::metadata(dir) else {
            return Ok(Arc::default());
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some((at, listing)) = self
            .listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(dir)
            && *at == modified
        {
            return Ok(listing.clone());
        }
        let mut entries = Vec::new();
        let read = std::fs::read_dir(dir).map_err(|e| s3_error!(e, InternalError))?;
        for entry in read.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            entries.push(Entry {
                name: if meta.is_dir() {
                    format!("{name}/")
                } else {
                    name
                },
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let listing = Arc::new(entries);
        self.listings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_owned(), (modified, listing.clone()));
        Ok(listing)
    }

    /// One page of a delimited listing of `prefix` after `after`: objects and common prefixes
    /// in key order, and whether more follow.
    fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> S3Result<(Vec<Object>, Vec<CommonPrefix>, Option<String>)> {
        self.check_bucket(bucket)?;
        let (dir_key, stem) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut dir = self.root.clone();
        for part in dir_key.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Ok(Default::default());
            }
            dir.push(part);
        }
        let base = if dir_key.is_empty() {
            String::new()
        } else {
            format!("{dir_key}/")
        };
        let listing = self.listing(&dir)?;
        let from = match after {
            Some(after) => {
                let tail = after.strip_prefix(base.as_str()).unwrap_or("");
                listing.partition_point(|e| e.name.as_str() <= tail)
            }
            None => listing.partition_point(|e| e.name.as_str() < stem),
        };
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut last = None;
        let mut more = false;
        for entry in &listing[from..] {
            if !entry.name.starts_with(stem) {
                break;
            }
            if objects.len() + prefixes.len() == max {
                more = true;
                break;
            }
            let key = format!("{base}{}", entry.name);
            if entry.name.ends_with('/') {
                prefixes.push(CommonPrefix {
                    prefix: Some(key.clone()),
                });
            } else {
                objects.push(Object {
                    key: Some(key.clone()),
                    size: Some(entry.size as i64),
                    last_modified: Some(Timestamp::from(entry.modified)),
                    // From the listing's own stat of the file: no second stat per key.
                    e_tag: Some(ETag::Strong(etag(entry.size, entry.modified))),
                    ..Default::default()
                });
            }
            last = Some(key);
        }
        Ok((objects, prefixes, if more { last } else { None }))
    }
}

fn precondition(if_match: Option<&ETagCondition>, etag: &str) -> S3Result<()> {
    match if_match {
        Some(ETagCondition::ETag(want)) if want.value() != etag => {
            Err(s3_error!(PreconditionFailed))
        }
        _ => Ok(()),
    }
}

#[async_trait::async_trait]
impl S3 for Bucket {
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.check_bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (_, meta) = self.metadata(&req.input.bucket, &req.input.key)?;
        let etag = etag_of(&meta);
        precondition(req.input.if_match.as_ref(), &etag)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.len() as i64),
            last_modified: meta.modified().ok().map(Timestamp::from),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (path, meta) = self.metadata(&input.bucket, &input.key)?;
        let etag = etag_of(&meta);
        precondition(input.if_match.as_ref(), &etag)?;
        let len = meta.len();
        let (start, end, content_range) = match &input.range {
            None => (0, len, None),
            Some(range) => {
                let r = range.check(len).map_err(|_| s3_error!(InvalidRange))?;
                (
                    r.start,
                    r.end,
                    Some(format!(
                        "bytes {}-{}/{len}",
                        r.start,
                        r.end.saturating_sub(1)
                    )),
                )
            }
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| s3_error!(e, NoSuchKey))?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| s3_error!(e, InternalError))?;
        let body =
            futures_util::stream::unfold((file, end - start), |(mut file, left)| async move {
                if left == 0 {
                    return None;
                }
                let want = (left as usize).min(READ);
                let mut buf = BytesMut::zeroed(want);
                let mut got = 0;
                while got < want {
                    match file.read(&mut buf[got..]).await {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(err) => return Some((Err(err), (file, 0))),
                    }
                }
                if got == 0 {
                    let short = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Some((Err(short), (file, 0)));
                }
                buf.truncate(got);
                let chunk: Bytes = buf.freeze();
                Some((Ok(chunk), (file, left - got as u64)))
            });
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: Some((end - start) as i64),
            content_range,
            last_modified: meta.modified().ok().map(Timestamp::from),
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let after = input
            .continuation_token
            .as_deref()
            .or(input.start_after.as_deref());
        let (objects, prefixes, next) = self.list(&input.bucket, &prefix, after, max)?;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            max_keys: Some(max as i32),
            key_count: Some((objects.len() + prefixes.len()) as i32),
            is_truncated: Some(next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let (objects, prefixes, next) =
            self.list(&input.bucket, &prefix, input.marker.as_deref(), max)?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            marker: input.marker,
            max_keys: Some(max as i32),
            is_truncated: Some(next.is_some()),
            next_marker: next,
            contents: Some(objects),
            common_prefixes: Some(prefixes),
            ..Default::default()
        }))
    }
}

/// Serves `dir` as bucket `bucket` on 127.0.0.1:`port` until killed; requests must be signed
/// with `access_key`/`secret_key`.
pub(crate) async fn serve(
    dir: &Path,
    bucket: &str,
    port: u16,
    access_key: &str,
    secret_key: &str,
) -> anyhow::Result<bool> {
    let bucket = Bucket {
        name: bucket.to_owned(),
        root: dir
            .canonicalize()
            .with_context(|| format!("serving {}", dir.display()))?,
        listings: Mutex::default(),
    };
    let service = {
        let mut builder = S3ServiceBuilder::new(bucket);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        builder.build()
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_leave_the_directory_name_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/x"), b"x").unwrap();
        let bucket = Bucket {
            name: "b".into(),
            root: dir.path().join("d"),
            listings: Mutex::default(),
        };
        for key in ["../d/x", "a/../../x", "/x", "a//x", "./x", ""] {
            assert!(bucket.path_of("b", key).is_err(), "{key:?}");
        }
        assert!(bucket.path_of("other", "x").is_err(), "another bucket");
        assert_eq!(bucket.path_of("b", "x").unwrap(), dir.path().join("d/x"));
        let (objects, prefixes, _) = bucket.list("b", "../", None, 10).unwrap();
        assert!(
            objects.is_empty() && prefixes.is_empty(),
            "a listing above the root"
        );
        let (objects, _, _) = bucket.list("b", "", None, 10).unwrap();
        let meta = std::fs::metadata(dir.path().join("d/x")).unwrap();
        assert_eq!(
            objects[0].e_tag,
            Some(ETag::Strong(etag_of(&meta))),
            "a listing's ETag is the one GET and HEAD send"
        );
    }
}
