//! Builds one object_store client per configured backend: endpoint, credentials (already
//! resolved into secrets), retries and the request timeout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cloud_identity::metrics::CredentialMetrics;
use credentials::ExposeSecret;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::{Certificate, ClientOptions, RetryConfig};
use warpdrive_fs::Backend;
use warpdrive_fs::paged::{PagedList, Paginated};

use crate::config::{BackendSettings, BackendType, Config, ResolvedSecret};
use crate::identity::Keyless;

fn secret<'a>(secrets: &'a [ResolvedSecret], at: &str, field: &str) -> Option<&'a ResolvedSecret> {
    let key = format!("{at}.auth.{field}");
    secrets.iter().find(|s| s.key == key)
}

fn client_options(settings: &BackendSettings, at: &str) -> anyhow::Result<ClientOptions> {
    let mut options = ClientOptions::new()
        .with_timeout(settings.request_timeout)
        .with_connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
        .with_allow_http(settings.allow_http);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).with_context(|| {
            format!("config key `{at}.ca_file`: cannot read {}", path.display())
        })?;
        for cert in Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "config key `{at}.ca_file`: no PEM certificates in {}",
                path.display()
            )
        })? {
            options = options.with_root_certificate(cert);
        }
    }
    Ok(options)
}

fn retry(settings: &BackendSettings) -> RetryConfig {
    RetryConfig {
        max_retries: settings.retries as usize,
        retry_timeout: settings.request_timeout,
        ..Default::default()
    }
}

/// A backend's store, and its page-by-page listing where it has one.
pub(crate) type Built = (Arc<dyn ObjectStore>, Option<Arc<dyn PagedList>>);

/// The store of one backend.
pub(crate) fn build_store(
    settings: &BackendSettings,
    at: &str,
    secrets: &[ResolvedSecret],
    metrics: &CredentialMetrics,
) -> anyhow::Result<Built> {
    let keyless = crate::identity::start(settings, at, metrics)?;
    if let Some(endpoint) = &settings.endpoint
        && endpoint.starts_with("http://")
        && !settings.allow_http
    {
        bail!(
            "config key `{at}.endpoint`: {endpoint} is plain http; set `{at}.allow_http: true` for an emulator"
        );
    }
    let store: Built =
        match settings.kind {
            BackendType::S3 => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(settings.bucket.clone().unwrap_or_default())
                    .with_region(
                        settings
                            .region
                            .clone()
                            .unwrap_or_else(|| "us-east-1".into()),
                    )
                    .with_client_options(client_options(settings, at)?)
                    .with_retry(retry(settings));
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(settings.allow_http);
                }
                if let Some(Keyless::Aws(provider)) = &keyless {
                    builder = builder.with_credentials(provider.clone());
                } else {
                    match (
                        secret(secrets, at, "access_key_id"),
                        secret(secrets, at, "secret_access_key"),
                    ) {
                        (Some(id), Some(key)) => {
                            builder = builder
                                .with_access_key_id(id.value.expose_secret())
                                .with_secret_access_key(key.value.expose_secret());
                        }
                        _ => builder = builder.with_skip_signature(true),
                    }
                }
                let s3 =
                    Arc::new(builder.build().with_context(|| {
                        format!("config key `{at}`: cannot build the S3 client")
                    })?);
                (s3.clone(), Some(Arc::new(Paginated(s3))))
            }
            BackendType::Azure => {
                let mut builder = MicrosoftAzureBuilder::new()
                    .with_account(settings.account.clone().unwrap_or_default())
                    .with_container_name(settings.container.clone().unwrap_or_default())
                    .with_client_options(client_options(settings, at)?)
                    .with_retry(retry(settings));
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder
                        .with_endpoint(endpoint.clone())
                        .with_allow_http(settings.allow_http);
                }
                if let Some(Keyless::Azure(provider)) = &keyless {
                    builder = builder.with_credentials(provider.clone());
                } else {
                    match secret(secrets, at, "account_key") {
                        Some(key) => builder = builder.with_access_key(key.value.expose_secret()),
                        None => builder = builder.with_skip_signature(true),
                    }
                }
                // object_store has no paginated listing for Azure: its listings come whole.
                let azure = Arc::new(builder.build().with_context(|| {
                    format!("config key `{at}`: cannot build the Azure client")
                })?);
                (azure, None)
            }
            BackendType::Gcs => {
                let mut builder = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(settings.bucket.clone().unwrap_or_default())
                    .with_client_options(client_options(settings, at)?)
                    .with_retry(retry(settings));
                if let Some(file) = &settings.auth.service_account_file {
                    builder = builder.with_service_account_path(file.display().to_string());
                }
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder
                        .with_config(GoogleConfigKey::BaseUrl, endpoint.trim_end_matches('/'));
                }
                if let Some(Keyless::Gcp(provider)) = &keyless {
                    builder = builder.with_credentials(provider.clone());
                }
                let gcs =
                    Arc::new(builder.build().with_context(|| {
                        format!("config key `{at}`: cannot build the GCS client")
                    })?);
                (gcs.clone(), Some(Arc::new(Paginated(gcs))))
            }
            BackendType::Local => {
                let root = settings.root.clone().with_context(|| {
                    format!("config key `{at}.root` is required for a local backend")
                })?;
                if !root.is_dir() {
                    bail!(
                        "config key `{at}.root`: {} is not a directory",
                        root.display()
                    );
                }
                let local = LocalFileSystem::new_with_prefix(&root).with_context(|| {
                    format!("config key `{at}.root`: cannot serve {}", root.display())
                })?;
                let prefix = settings
                    .prefix
                    .as_deref()
                    .unwrap_or_default()
                    .trim_matches('/');
                let confined = Arc::new(
                    warpdrive_fs::confined::Confined::new(local, &root, prefix).with_context(
                        || format!("config key `{at}.root`: cannot resolve {}", root.display()),
                    )?,
                );
                (confined.clone(), Some(confined))
            }
        };
    Ok(store)
}

/// Every backend, in configuration order.
pub(crate) fn build(
    config: &Config,
    secrets: &[ResolvedSecret],
    metrics: &CredentialMetrics,
) -> anyhow::Result<Vec<Backend>> {
    config
        .backends
        .iter()
        .enumerate()
        .map(|(i, settings)| {
            let at = format!("backends.{i}");
            let (store, pages) = build_store(settings, &at, secrets, metrics)?;
            Ok(Backend {
                name: settings.name.clone(),
                store,
                pages,
                prefix: settings
                    .prefix
                    .clone()
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_owned(),
                timeout: settings.request_timeout,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(yaml: &str) -> BackendSettings {
        serde_yaml::from_str(yaml).unwrap()
    }

    // No GCS emulator works with object_store here (none of the known ones runs on the CI machines), so the GCS
    // path is checked up to the client: the builder accepts the config or names the key.
    #[test]
    fn gcs_builds_from_config_and_names_a_bad_credential_file() {
        let ok = backend("{ name: g, type: gcs, bucket: b, mount_path: /g }");
        assert!(build_store(&ok, "backends.0", &[], &CredentialMetrics::default()).is_ok());
        let bad = backend(
            "{ name: g, type: gcs, bucket: b, mount_path: /g, auth: { method: static, service_account_file: /nonexistent/sa.json } }",
        );
        let err = build_store(&bad, "backends.0", &[], &CredentialMetrics::default())
            .expect_err("a missing key file is an error")
            .to_string();
        assert!(err.contains("backends.0"), "{err}");
    }

    #[test]
    fn plain_http_needs_allow_http_and_local_needs_a_directory() {
        let http = backend(
            "{ name: s, type: s3, bucket: b, mount_path: /s, endpoint: 'http://127.0.0.1:9' }",
        );
        let err = build_store(&http, "backends.1", &[], &CredentialMetrics::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("backends.1.allow_http"), "{err}");
        let local = backend("{ name: l, type: local, mount_path: /l, root: /nonexistent/dir }");
        let err = build_store(&local, "backends.2", &[], &CredentialMetrics::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("backends.2.root"), "{err}");
    }
}
