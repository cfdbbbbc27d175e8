//! The data-moving jobs against the simulator: a LOCAL replication gives a copy with no origin
//! (the source can go at once), is safe to retry, and refuses to overwrite; an encrypted
//! dataset with a passphrase or key comes back locked after a restart with state, with its
//! data out of sight, and `pool.dataset.unlock` opens it with the right secret only.

mod common;

use secrecy::SecretString;
use truenas::api::{Encryption, EncryptionKey, NewDataset, NewSnapshot};
use truenas::{ApiKey, Client, ClientMetrics, ClientSettings};
use truenas_sim::{SimConfig, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_replication_copies_a_snapshot_into_an_independent_dataset() {
    let env = common::sim().await;
    let client = common::client(&env).await;
    let data = env.sim.data_dir().to_owned();
    client
        .datasets()
        .create(&NewDataset::filesystem("tank/src"))
        .await
        .unwrap();
    std::fs::write(data.join("mnt/tank/src/file.txt"), b"replicated bytes").unwrap();
    client
        .snapshots()
        .create(&NewSnapshot {
            dataset: "tank/src".into(),
            name: "csi-snap.1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::write(
        data.join("mnt/tank/src/file.txt"),
        b"changed after the snapshot",
    )
    .unwrap();
    let jobs = client.replication();
    let overrides =
        std::collections::BTreeMap::from([("org.example:owner".to_owned(), "me".to_owned())]);
    jobs.copy_snapshot("tank/src", "csi-snap.1", "tank/copy", &overrides)
        .await
        .unwrap();
    // A retry finds the copy there and succeeds.
    jobs.copy_snapshot("tank/src", "csi-snap.1", "tank/copy", &overrides)
        .await
        .unwrap();
    let copy = client.datasets().get("tank/copy").await.unwrap().unwrap();
    assert_eq!(
        copy.user_property("org.example:owner"),
        Some("me"),
        "born with its overrides"
    );
    assert!(
        copy.origin.as_ref().is_none_or(|o| o.rawvalue.is_empty()),
        "{:?}",
        copy.origin
    );
    assert_eq!(
        std::fs::read(data.join("mnt/tank/copy/file.txt")).unwrap(),
        b"replicated bytes"
    );
    assert!(
        client
            .snapshots()
            .get("tank/copy@csi-snap.1")
            .await
            .unwrap()
            .is_some()
    );
    // The source and its snapshot can go at once: nothing depends on them.
    client
        .snapshots()
        .delete("tank/src@csi-snap.1", false, false)
        .await
        .unwrap();
    client
        .datasets()
        .delete("tank/src", false, false)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(data.join("mnt/tank/copy/file.txt")).unwrap(),
        b"replicated bytes"
    );
    // No matching snapshot, or a target with other data: the job fails with a clear reason.
    client
        .datasets()
        .create(&NewDataset::filesystem("tank/other"))
        .await
        .unwrap();
    let err = jobs
        .copy_snapshot("tank/other", "nope", "tank/x", &overrides)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("matching snapshots"), "{err}");
    client
        .snapshots()
        .create(&NewSnapshot {
            dataset: "tank/other".into(),
            name: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = jobs
        .copy_snapshot("tank/other", "s", "tank/copy", &overrides)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
}

fn client_for(sim: &Simulator, key: &str) -> Client {
    let mut settings = ClientSettings::new(
        sim.url().parse().unwrap(),
        ApiKey::fixed(SecretString::from(key.to_owned())),
    );
    settings.allow_insecure_transport = true;
    Client::new(settings, ClientMetrics::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_datasets_come_back_locked_after_a_restart_and_unlock_with_their_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SimConfig::new(dir.path().join("data"));
    config.state_dir = Some(dir.path().join("state"));
    let sim = Simulator::start(config.clone()).await.unwrap();
    let client = client_for(&sim, &config.api_key);
    client.ready().await.unwrap();
    let passphrase = "correct horse battery";
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    for (name, key) in [
        (
            "tank/pass",
            EncryptionKey::Passphrase(SecretString::from(passphrase)),
        ),
        ("tank/hex", EncryptionKey::Hex(SecretString::from(hex))),
        ("tank/generated", EncryptionKey::Generate),
    ] {
        let mut new = NewDataset::filesystem(name);
        new.encryption = Some(Encryption {
            algorithm: Some("AES-128-GCM".into()),
            key,
        });
        let created = client.datasets().create(&new).await.unwrap();
        assert!(created.encrypted && !created.locked);
        std::fs::write(dir.path().join("data/mnt").join(name).join("f"), name).unwrap();
    }
    let pass = client.datasets().get("tank/pass").await.unwrap().unwrap();
    assert_eq!(
        pass.key_format
            .as_ref()
            .and_then(|k| k.value.clone())
            .as_deref(),
        Some("PASSPHRASE")
    );
    // A short passphrase is refused by name.
    let mut short = NewDataset::filesystem("tank/short");
    short.encryption = Some(Encryption {
        algorithm: None,
        key: EncryptionKey::Passphrase(SecretString::from("short")),
    });
    let err = client.datasets().create(&short).await.unwrap_err();
    assert!(
        err.to_string().contains("encryption_options.passphrase"),
        "{err}"
    );
    // The state never holds a secret.
    let state = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(!state.contains(passphrase) && !state.contains(hex));

    // "Reboot".
    let addr = sim.addr();
    drop(client);
    sim.stop().await;
    let mut again = config.clone();
    again.listen = addr;
    let sim = Simulator::start(again).await.unwrap();
    let client = client_for(&sim, &config.api_key);
    client.ready().await.unwrap();
    let data = dir.path().join("data/mnt");
    for (name, locked) in [
        ("tank/pass", true),
        ("tank/hex", true),
        ("tank/generated", false),
    ] {
        let ds = client.datasets().get(name).await.unwrap().unwrap();
        assert_eq!(ds.locked, locked, "{name}");
        assert_eq!(data.join(name).join("f").exists(), !locked, "{name}");
    }
    let jobs = client.replication();
    // The wrong secret: the dataset stays locked and says why.
    let wrong = jobs
        .unlock(
            "tank/pass",
            &EncryptionKey::Passphrase(SecretString::from("not the passphrase")),
        )
        .await
        .unwrap();
    assert!(wrong.unlocked.is_empty());
    assert_eq!(
        wrong.failed["tank/pass"].error.as_deref(),
        Some("Invalid Key")
    );
    let done = jobs
        .unlock(
            "tank/pass",
            &EncryptionKey::Passphrase(SecretString::from(passphrase)),
        )
        .await
        .unwrap();
    assert_eq!(done.unlocked, ["tank/pass"]);
    assert_eq!(
        std::fs::read_to_string(data.join("tank/pass/f")).unwrap(),
        "tank/pass"
    );
    jobs.unlock(
        "tank/hex",
        &EncryptionKey::Hex(SecretString::from(hex.to_uppercase())),
    )
    .await
    .unwrap();
    assert!(
        !client
            .datasets()
            .get("tank/hex")
            .await
            .unwrap()
            .unwrap()
            .locked
    );
    // Unlocking what is not locked is refused by name.
    let err = jobs
        .unlock("tank/generated", &EncryptionKey::Generate)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not locked"), "{err}");
    drop(client);
    sim.stop().await;
}
