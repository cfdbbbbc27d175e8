//! The mount against real emulators: the moto S3 server (PyPI) and Azurite (npm), beside a
//! local backend, at different depths of one namespace; a backend stopped mid-test gives EIO
//! within its timeout while the others keep working. Needs root and /dev/fuse (CI has both);
//! `.ci/run` installs moto, azure-storage-blob and Azurite.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "../../warpdrive-fs/tests/common/emulators.rs"]
mod emulators;

use emulators::{AZURITE_KEY, Azurite, Moto, python};

const BIN: &str = env!("CARGO_BIN_EXE_warpdrive-mount");

fn write(root: &Path, key: &str, bytes: &[u8]) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn s3_azure_and_local_in_one_namespace_and_a_stopped_backend_gives_eio() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src, "hello.txt", b"hello from the cloud");
    write(&src, "dir/a.txt", b"a");
    write(&src, "dir/sub/b.txt", b"b");
    write(&src, "names/with space.txt", b"space");
    write(&src, "names/ünïcødé.txt", b"unicode");
    write(&src, "late.txt", b"never read before the outage");
    let mut big = vec![0u8; 3 << 20];
    for (i, byte) in big.iter_mut().enumerate() {
        *byte = (i * 31 % 251) as u8;
    }
    write(&src, "big.bin", &big);
    for i in 0..200 {
        write(&src, &format!("many/f{i:03}"), format!("{i}").as_bytes());
    }

    // moto S3.
    let moto = Moto::start();
    let s3_port = moto.port;
    python(&format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{s3_port}', aws_access_key_id='k', aws_secret_access_key='s', region_name='us-east-1')\n\
         s3.create_bucket(Bucket='train')\n\
         s3.put_object(Bucket='train', Key='data/markers/', Body=b'')\n\
         s3.put_object(Bucket='train', Key='data/markers/inside.txt', Body=b'in')\n\
         s3.put_object(Bucket='train', Key='data/emptydir/', Body=b'')\n\
         s3.put_object(Bucket='train', Key='data/bad//double.txt', Body=b'x')\n\
         for key in ['data/odd/ok.txt', 'data/odd/../up.txt', 'data/odd/./here.txt', 'data/odd/a//b.txt', 'data/odd/..', 'data/odd/ctl\\x01.txt']:\n\
         \x20   s3.put_object(Bucket='train', Key=key, Body=b'odd')\n\
         root = {src:?}\n\
         for d, _, files in os.walk(root):\n\
         \x20   for f in files:\n\
         \x20       p = os.path.join(d, f)\n\
         \x20       s3.upload_file(p, 'train', 'data/' + os.path.relpath(p, root))\n",
        src = src.display().to_string()
    ));

    // Azurite.
    let azurite = Azurite::start(&dir.path().join("azurite"));
    let az_port = azurite.port;
    python(&format!(
        "import os\n\
         from azure.storage.blob import BlobServiceClient\n\
         conn = 'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{az_port}/devstoreaccount1;'\n\
         svc = BlobServiceClient.from_connection_string(conn)\n\
         c = svc.create_container('ckpt')\n\
         root = {src:?}\n\
         for d, _, files in os.walk(root):\n\
         \x20   for f in files:\n\
         \x20       p = os.path.join(d, f)\n\
         \x20       with open(p, 'rb') as fh:\n\
         \x20           c.upload_blob(os.path.relpath(p, root), fh)\n",
        src = src.display().to_string()
    ));

    let backends = format!(
        "\x20 - name: s3\n    type: s3\n    bucket: train\n    prefix: data/\n    mount_path: /clouds/s3\n    endpoint: http://127.0.0.1:{s3_port}\n    allow_http: true\n    request_timeout: 2s\n    retries: 0\n    auth: {{ method: static, access_key_id_env: AKID, secret_access_key_env: SAK }}\n\
             \x20 - name: azure\n    type: azure\n    account: devstoreaccount1\n    container: ckpt\n    mount_path: /clouds/azure/blob\n    endpoint: http://127.0.0.1:{az_port}/devstoreaccount1\n    allow_http: true\n    request_timeout: 5s\n    auth: {{ method: static, account_key_env: AZKEY }}\n\
             \x20 - {{ name: local, type: local, mount_path: /local, root: {src} }}\n",
        src = src.display(),
    );
    let (config, mnt) = common::write_config(dir.path(), &backends);
    let mut child = Command::new(BIN)
        .args(["--config"])
        .arg(&config)
        .args(["--log-format", "json"])
        .env_clear()
        .envs([
            ("AKID", "k"),
            ("SAK", "s"),
            ("AZKEY", AZURITE_KEY),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mount = common::Mounted {
        child,
        mnt: mnt.clone(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut metrics_addr = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("warpdrive-mount logs");
        if let Some(addr) = common::metrics_addr(&line) {
            metrics_addr = Some(addr);
        }
        if line.contains("\"mounted\"") {
            break;
        }
        assert!(!line.contains("\"ERROR\""), "{line}");
        assert!(Instant::now() < deadline, "not mounted in time");
    }

    for (root, what) in [
        (mnt.join("clouds/s3"), "s3"),
        (mnt.join("clouds/azure/blob"), "azure"),
        (mnt.join("local"), "local"),
    ] {
        assert_eq!(
            std::fs::read(root.join("hello.txt")).unwrap(),
            b"hello from the cloud",
            "{what}"
        );
        assert_eq!(
            std::fs::read(root.join("dir/sub/b.txt")).unwrap(),
            b"b",
            "{what}"
        );
        assert_eq!(
            std::fs::read(root.join("names/with space.txt")).unwrap(),
            b"space",
            "{what}"
        );
        assert_eq!(
            std::fs::read(root.join("names/ünïcødé.txt")).unwrap(),
            b"unicode",
            "{what}"
        );
        assert_eq!(
            std::fs::read_dir(root.join("many")).unwrap().count(),
            200,
            "{what}"
        );
        let meta = std::fs::metadata(root.join("big.bin")).unwrap();
        assert_eq!(meta.len(), big.len() as u64, "{what}");
        let mut file = std::fs::File::open(root.join("big.bin")).unwrap();
        for _ in 0..40 {
            let offset = fastrand::usize(0..big.len());
            let len = fastrand::usize(1..(1 << 20));
            let mut buf = vec![0u8; len];
            file.seek(SeekFrom::Start(offset as u64)).unwrap();
            let mut got = 0;
            while got < len {
                let n = file.read(&mut buf[got..]).unwrap();
                if n == 0 {
                    break;
                }
                got += n;
            }
            assert_eq!(
                &buf[..got],
                &big[offset..(offset + len).min(big.len())],
                "{what} offset {offset} len {len}"
            );
        }
    }
    // Directory markers are directories; a marker alone is an empty directory; a key with an
    // empty segment is skipped, never a crash.
    assert_eq!(
        std::fs::read(mnt.join("clouds/s3/markers/inside.txt")).unwrap(),
        b"in"
    );
    assert!(
        std::fs::metadata(mnt.join("clouds/s3/emptydir"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read_dir(mnt.join("clouds/s3/emptydir"))
            .unwrap()
            .count(),
        0
    );
    let s3_top: Vec<String> = std::fs::read_dir(mnt.join("clouds/s3"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        s3_top.contains(&"markers".to_owned()) && s3_top.contains(&"dir".to_owned()),
        "{s3_top:?}"
    );
    // Keys no path can show (`..`, `.`, empty segments, a control character): left out and
    // counted, and every other entry of their directory is still there.
    let _ = std::fs::read_dir(mnt.join("clouds/s3/bad"))
        .expect("bad/ lists")
        .count();
    let odd: Vec<String> = std::fs::read_dir(mnt.join("clouds/s3/odd"))
        .expect("one odd key does not break its directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(odd.contains(&"ok.txt".to_owned()), "{odd:?}");
    assert!(
        odd.iter()
            .all(|n| n != ".." && n != "." && !n.chars().any(char::is_control)),
        "{odd:?}"
    );
    assert_eq!(
        std::fs::read(mnt.join("clouds/s3/odd/ok.txt")).unwrap(),
        b"odd"
    );
    while metrics_addr.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the metrics address is logged");
        metrics_addr = common::metrics_addr(&line);
    }
    let metrics = common::scrape(metrics_addr.as_deref().unwrap_or_default());
    let skipped: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with(r#"warpdrive_keys_skipped_total{backend="s3",reason="invalid_key"}"#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(skipped >= 2.0, "skipped keys not counted:\n{metrics}");
    assert_eq!(
        std::fs::read(mnt.join("clouds/s3/hello.txt")).unwrap(),
        b"hello from the cloud",
        "still mounted and serving"
    );
    let mut clouds: Vec<String> = std::fs::read_dir(mnt.join("clouds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    clouds.sort();
    assert_eq!(
        clouds,
        ["azure", "s3"],
        "synthetic parents of the mount paths"
    );

    // Stop S3: reading something not read before is EIO within the 2 s timeout; the others work.
    drop(moto);
    std::thread::sleep(Duration::from_millis(1500)); // let cached attributes expire
    let started = Instant::now();
    let err = std::fs::read(mnt.join("clouds/s3/late.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(mnt.join("clouds/azure/blob/late.txt")).unwrap(),
        b"never read before the outage"
    );
    assert_eq!(
        std::fs::read(mnt.join("local/late.txt")).unwrap(),
        b"never read before the outage"
    );
    drop(mount);
}
