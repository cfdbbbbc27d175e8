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
    // A directory's first stream reads entries in the order the backend gave them.
    seen.sort();
    let want: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    assert_eq!(seen, want, "every name of the opened listing exactly once");
    core.releasedir(fh);
    // A new stream sees the new names.
    let fh = core.opendir(d).await.unwrap();
    let page = core.readdir(d, fh, 0, 1000).await.unwrap();
    assert_eq!(page.len(), 350);
    assert!(page.iter().any(|(_, name, _)| name == "a00"));
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

/// The names a page-by-page listing of `dir` shows through `core`, in order.
async fn names_of(core: &warpdrive_fs::Core, dir: u64) -> Vec<String> {
    let fh = core.opendir(dir).await.unwrap();
    let mut names = Vec::new();
    loop {
        let page = core.readdir(dir, fh, names.len(), 500).await.unwrap();
        if page.is_empty() {
            break;
        }
        names.extend(page.into_iter().map(|(_, name, _)| name));
    }
    core.releasedir(fh);
    names
}

#[tokio::test]
async fn a_local_directory_listed_page_by_page_matches_the_store_and_reads_back() {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    use std::os::unix::fs::symlink;
    use warpdrive_fs::confined::Confined;
    use warpdrive_fs::paged::{PAGE_KEYS, PagedList};

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let d = src.join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    // More than two pages, and names object_store spells in odd ways.
    let files = 2 * PAGE_KEYS + 17;
    for i in 0..files {
        std::fs::write(d.join(format!("f{i:05}")), vec![b'x'; i % 7]).unwrap();
    }
    let odd = ["é.txt", "a b", "x{y}[z]", "#a1", "q?r&s=t", "tab\u{a0}nbsp"];
    for name in odd {
        std::fs::write(d.join(name), name.as_bytes()).unwrap();
    }
    std::fs::write(
        d.join("upload#123"),
        b"the local store's own upload in progress",
    )
    .unwrap();
    symlink(d.join("f00001"), d.join("link-in")).unwrap();
    symlink(dir.path().join("secret"), d.join("link-out")).unwrap();
    symlink(dir.path(), d.join("dir-out")).unwrap();

    // The pages against the local store's own whole listing: same keys, same ETags.
    let confined = Confined::new(
        object_store::local::LocalFileSystem::new_with_prefix(&src).unwrap(),
        &src,
        "",
    )
    .unwrap();
    let prefix = object_store::path::Path::from("d");
    let pages: Vec<object_store::ListResult> = confined
        .list_pages(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert!(
        pages
            .iter()
            .all(|p| p.objects.len() + p.common_prefixes.len() <= PAGE_KEYS)
    );
    let row = |o: &object_store::ObjectMeta| {
        (
            o.location.to_string(),
            o.size,
            o.e_tag.clone(),
            o.last_modified,
        )
    };
    let mut paged: Vec<_> = pages.iter().flat_map(|p| &p.objects).map(row).collect();
    let whole = confined.list_with_delimiter(Some(&prefix)).await.unwrap();
    let mut want: Vec<_> = whole.objects.iter().map(row).collect();
    paged.sort();
    want.sort();
    assert_eq!(
        paged.len(),
        files + odd.len() + 1,
        "link-in is listed, link-out not"
    );
    let only_paged: Vec<_> = paged.iter().filter(|e| !want.contains(e)).collect();
    let only_whole: Vec<_> = want.iter().filter(|e| !paged.contains(e)).collect();
    assert!(
        only_paged.is_empty() && only_whole.is_empty(),
        "pages only: {only_paged:?}; whole listing only: {only_whole:?}"
    );
    let dirs: Vec<String> = pages
        .iter()
        .flat_map(|p| &p.common_prefixes)
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        dirs,
        ["d/sub"],
        "the link to a directory outside is left out"
    );

    // Entries the local store's whole listing gives up on (a link loop, a control character)
    // cost only themselves.
    std::fs::write(d.join("bad\u{1}name"), b"control").unwrap();
    symlink(d.join("loop"), d.join("loop")).unwrap();
    let pages: Vec<object_store::ListResult> = confined
        .list_pages(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    let listed: usize = pages.iter().map(|p| p.objects.len()).sum();
    assert_eq!(listed, files + odd.len() + 1);
    let skipped: Vec<&String> = pages
        .iter()
        .filter_map(|p| p.extensions.get::<object_store::list::SkippedKeys>())
        .flat_map(|s| &s.0)
        .collect();
    assert_eq!(skipped, [&"d/bad\u{1}name".to_owned()]);

    // Through the core: every name as the file system spells it, and a read of each odd
    // name returns its bytes (the listed version is the one the store serves).
    let core = common::core(&src, common::cache(&dir.path().join("cache"), 1 << 30));
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let d_ino = core.lookup(local, "d").await.unwrap().ino;
    let mut names = names_of(&core, d_ino).await;
    names.sort();
    let mut expected: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
    expected.extend(odd.iter().map(|s| s.to_string()));
    expected.extend(["link-in".to_owned(), "sub".to_owned()]);
    expected.sort();
    assert_eq!(names, expected);
    for name in odd {
        let attr = core.lookup(d_ino, name).await.unwrap();
        let (fh, _) = core.open(attr.ino).await.unwrap();
        let bytes = core.read_handle(fh, attr.ino, 0, 4096).await.unwrap();
        assert_eq!(&bytes[..], name.as_bytes(), "{name}");
        core.release(fh);
    }
}

#[tokio::test]
async fn a_directory_stream_returns_entries_before_the_listing_is_whole() {
    use std::sync::atomic::Ordering;
    use warpdrive_fs::paged::PAGE_KEYS;

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    let files = 2 * PAGE_KEYS + 500;
    for i in 0..files {
        std::fs::write(src.join(format!("d/f{i:05}")), b"x").unwrap();
    }
    let settings = warpdrive_fs::FsSettings {
        list_cache_ttl: Duration::from_secs(300),
        attr_ttl: Duration::from_secs(300),
        ..common::fs_settings()
    };
    let core = std::sync::Arc::new(common::paged_core(&src, settings));
    let pages = || core.stats().list_pages.load(Ordering::SeqCst);
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let d = core.lookup(local, "d").await.unwrap().ino;
    let before = pages();
    let fh = core.opendir(d).await.unwrap();
    assert_eq!(pages(), before, "opendir does not wait for the listing");
    let first = core.readdir(d, fh, 0, 100).await.unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(
        pages() - before,
        1,
        "the first entries need only the first page"
    );
    // A second stream opened meanwhile shares the listing being taken.
    let fh2 = core.opendir(d).await.unwrap();
    assert_eq!(core.readdir(d, fh2, 0, 10).await.unwrap().len(), 10);
    assert_eq!(pages() - before, 1);
    let mut seen: Vec<String> = first.into_iter().map(|(_, name, _)| name).collect();
    loop {
        let page = core.readdir(d, fh, seen.len(), 300).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert_eq!(page[0].0, seen.len(), "positions run on without a gap");
        seen.extend(page.into_iter().map(|(_, name, _)| name));
    }
    core.releasedir(fh);
    core.releasedir(fh2);
    let taken = pages() - before;
    assert!(warpdrive_fs::paged::pages_for(files) > 3);
    assert_eq!(
        taken,
        u64::from(warpdrive_fs::paged::pages_for(files)),
        "each page taken once"
    );
    seen.sort();
    let want: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
    assert_eq!(seen, want, "every name once");
    // The finished listing is kept: lookups and a new stream need no page.
    assert!(core.lookup(d, "f01234").await.is_ok());
    let fh = core.opendir(d).await.unwrap();
    assert_eq!(core.readdir(d, fh, 0, 10_000).await.unwrap().len(), files);
    assert_eq!(
        core.readdir(d, fh, 0, 3).await.unwrap()[0].1,
        "f00000",
        "sorted"
    );
    core.releasedir(fh);
    assert_eq!(pages() - before, taken);
}

#[tokio::test]
async fn a_lookup_during_a_directory_stream_finishes_its_listing_not_a_second_one() {
    use std::sync::atomic::Ordering;
    use warpdrive_fs::paged::PAGE_KEYS;

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..(PAGE_KEYS + 10) {
        std::fs::write(src.join(format!("d/f{i:05}")), b"x").unwrap();
    }
    let core = std::sync::Arc::new(common::paged_core(&src, common::fs_settings()));
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let d = core.lookup(local, "d").await.unwrap().ino;
    let before = core.stats().list_pages.load(Ordering::SeqCst);
    let fh = core.opendir(d).await.unwrap();
    assert_eq!(core.readdir(d, fh, 0, 5).await.unwrap().len(), 5);
    let found = core.lookup(d, "f01005").await.unwrap();
    assert_eq!(found.size, 1);
    assert_eq!(
        core.stats().list_pages.load(Ordering::SeqCst) - before,
        u64::from(warpdrive_fs::paged::pages_for(PAGE_KEYS + 10)),
        "the lookup took the stream's remaining pages, not a new listing"
    );
    let rest = core.readdir(d, fh, 5, 10_000).await.unwrap();
    assert_eq!(rest.len(), PAGE_KEYS + 5);
    core.releasedir(fh);
}

#[tokio::test]
async fn a_listing_that_stalls_fails_its_stream_within_the_timeout_and_the_next_open_lists_again() {
    use common::faulty::{Faults, Faulty};
    use object_store::{ObjectStore, ObjectStoreExt};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    for i in 0..20 {
        inner
            .put(&format!("d/f{i:02}").as_str().into(), b"x".to_vec().into())
            .await
            .unwrap();
    }
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn ObjectStore> = Arc::new(Faulty {
        inner,
        faults: faults.clone(),
    });
    let core = common::uncached_core(
        "memory",
        store,
        Duration::from_millis(300),
        common::fs_settings(),
    );
    let local = core.lookup(warpdrive_fs::ROOT, "local").await.unwrap().ino;
    let d = core.lookup(local, "d").await.unwrap().ino;
    // The listing of `d` is kept 200 ms; past that, the store stops answering.
    tokio::time::sleep(Duration::from_millis(250)).await;
    faults.stall.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let fh = core.opendir(d).await.unwrap();
    let err = core.readdir(d, fh, 0, 10).await.unwrap_err();
    assert!(
        matches!(err, warpdrive_fs::FsError::Timeout { .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        core.readdir(d, fh, 0, 10).await.is_err(),
        "the stream stays failed"
    );
    core.releasedir(fh);
    faults.stall.store(false, Ordering::SeqCst);
    let fh = core.opendir(d).await.unwrap();
    assert_eq!(core.readdir(d, fh, 0, 100).await.unwrap().len(), 20);
    core.releasedir(fh);
}
