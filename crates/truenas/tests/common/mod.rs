//! Starts a simulator and a client logged in to it.

#![allow(dead_code)]

use std::time::Duration;

use secrecy::SecretString;
use truenas::{ApiKey, Client, ClientMetrics, ClientSettings};
use truenas_sim::{SimConfig, Simulator};

pub(crate) struct Env {
    pub(crate) sim: Simulator,
    pub(crate) key: String,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn sim() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = SimConfig::new(dir.path().join("data"));
    let key = config.api_key.clone();
    let sim = Simulator::start(config).await.unwrap();
    Env { sim, key, dir }
}

pub(crate) fn settings(env: &Env, key: &str) -> ClientSettings {
    let mut settings = ClientSettings::new(
        env.sim.url().parse().unwrap(),
        ApiKey::fixed(SecretString::from(key.to_owned())),
    );
    settings.allow_insecure_transport = true;
    settings.call_timeout = Duration::from_secs(20);
    settings.backoff_initial = Duration::from_millis(50);
    settings.backoff_max = Duration::from_millis(500);
    settings
}

pub(crate) async fn client(env: &Env) -> Client {
    let client = Client::new(settings(env, &env.key), ClientMetrics::default()).unwrap();
    client.ready().await.unwrap();
    client
}
