//! Directory streams over a local backend: pages that cost what they return, and a stream
//! that keeps the listing it opened with when the listing cache refreshes under it.

mod common;

use std::time::Duration;

#[tokio::test]
async fn a_directory_stream_keeps_its_listing_while_the_cache_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("d/f{i:03}")), b"x").unwrap();
    }
    let core = common::core(&src, common::cache(&dir.path().join("cache"), 1 << 30));
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let d = core.lookup(local, "d").await.unwrap().ino;
    let fh = core.opendir(d).await.unwrap();
    let first = core.readdir(d, fh, 0, 100).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(first[0].1, "f000");
    // Names that sort before every listed one appear, and the listing cache (200 ms) expires.
    for i in 0..50 {
        std::fs::write(src.join(format!("d/a{i:02}")), b"y").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen: Vec<String> = first.into_iter().map(|(_, name, _)| name).collect();
    let mut from = 100;
    loop {
        let page = core.readdir(d, fh, from, 64).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.0 + 1;
        seen.extend(page.into_iter().map(|(_, name, _)| name));
    }
    let want: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    assert_eq!(seen, want, "every name of the opened listing exactly once");
    core.releasedir(fh);
    // A new stream sees the new names.
    let fh = core.opendir(d).await.unwrap();
    let page = core.readdir(d, fh, 0, 1000).await.unwrap();
    assert_eq!(page.len(), 350);
    assert_eq!(page[0].1, "a00");
    assert_eq!(core.readdir(d, fh, 350, 10).await.unwrap().len(), 0);
    assert_eq!(core.readdir(d, fh, 10_000, 10).await.unwrap().len(), 0);
    core.releasedir(fh);
}

#[tokio::test]
async fn kept_listings_are_bounded_in_names_not_only_in_directories() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["a", "b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
        for i in 0..100 {
            std::fs::write(src.join(format!("{d}/f{i:03}")), b"x").unwrap();
        }
    }
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&src).unwrap());
    let settings = warpdrive_fs::FsSettings {
        attr_ttl: Duration::from_secs(300),
        // Room for one directory of 100 names (and the small root listings), not two.
        list_cache_names: 150,
        list_cache_ttl: Duration::from_secs(300),
        ..common::fs_settings()
    };
    let core = Arc::new(common::uncached_core(
        "local",
        store,
        Duration::from_secs(10),
        settings,
    ));
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let a = core.lookup(local, "a").await.unwrap().ino;
    let b = core.lookup(local, "b").await.unwrap().ino;
    let listed = |ino| {
        let core = core.clone();
        async move { core.readdir(ino, 0, 0, 1000).await.unwrap().len() }
    };
    assert_eq!(listed(a).await, 100);
    assert_eq!(listed(b).await, 100);
    // A new name in each: a kept listing (within its 300 s) does not show it, a dropped one
    // is listed again and does.
    std::fs::write(src.join("a/new"), b"y").unwrap();
    std::fs::write(src.join("b/new"), b"y").unwrap();
    assert_eq!(listed(b).await, 100, "b, the newest listing, is kept");
    assert_eq!(listed(a).await, 101, "a went out to keep 150 names");
}
