//! The keyless `auth.method`s: which backend type each serves, the keys each needs (checked
//! at `check-config` exactly as at start), and the cloud-identity flow each becomes.

use std::sync::Arc;
use std::time::Duration;

use cloud_identity::azure::{self, BearerSource, ClientProof};
use cloud_identity::metrics::CredentialMetrics;
use cloud_identity::subject::SubjectToken;
use cloud_identity::{HttpSettings, RefreshSettings, Refresher};
use object_store::aws::AwsCredentialProvider;
use object_store::azure::AzureCredentialProvider;
use object_store::gcp::GcpCredentialProvider;
use settings::Invalid;

use crate::config::{AuthMethod, BackendSettings, BackendType};

/// The audience Entra issues tokens for when another cloud federates with it.
const TOKEN_EXCHANGE: &str = "api://AzureADTokenExchange";

/// Whether `method` can authenticate a backend of `kind` (besides `none` and `static`).
pub(crate) fn serves(method: AuthMethod, kind: BackendType) -> bool {
    matches!(
        (method, kind),
        (
            AuthMethod::ManagedIdentity
                | AuthMethod::ServicePrincipal
                | AuthMethod::WorkloadIdentity
                | AuthMethod::KeyVault,
            BackendType::Azure
        ) | (
            AuthMethod::OidcFederation | AuthMethod::KeyVault,
            BackendType::S3
        ) | (AuthMethod::GcpWif, BackendType::Gcs)
    )
}

/// The methods a backend type takes, for an error message.
pub(crate) fn methods_for(kind: BackendType) -> &'static str {
    match kind {
        BackendType::S3 => "s3 takes static, none, oidc_federation or key_vault",
        BackendType::Azure => {
            "azure takes static, none, managed_identity, service_principal, workload_identity or key_vault"
        }
        BackendType::Gcs => "gcs takes static, none or gcp_wif",
        BackendType::Local => "local takes none",
    }
}

/// A value given directly or by the name of the variable holding it.
fn value(
    at: &str,
    field: &str,
    direct: Option<&String>,
    env: Option<&String>,
) -> Result<Option<String>, Invalid> {
    let key = |f: &str| format!("{at}.auth.{f}");
    match (direct, env) {
        (Some(_), Some(_)) => Err(Invalid::new(
            key(field),
            format!("give `{field}` or `{field}_env`, not both"),
        )),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
            _ => Err(Invalid::new(
                key(&format!("{field}_env")),
                format!("environment variable `{var}` is not set"),
            )),
        },
        (None, None) => Ok(None),
    }
}

fn required(
    at: &str,
    field: &str,
    got: Option<String>,
    method: AuthMethod,
) -> Result<String, Invalid> {
    got.ok_or_else(|| {
        Invalid::new(
            format!("{at}.auth.{field}"),
            format!("required for method {}", method.name()),
        )
    })
}

/// What a keyless method resolved to.
struct Resolved {
    client_id: Option<String>,
    tenant_id: Option<String>,
    role_arn: Option<String>,
}

fn resolve(settings: &BackendSettings, at: &str) -> Result<Resolved, Invalid> {
    let auth = &settings.auth;
    let method = auth.method;
    let client_id = value(
        at,
        "client_id",
        auth.client_id.as_ref(),
        auth.client_id_env.as_ref(),
    )?;
    let tenant_id = value(
        at,
        "tenant_id",
        auth.tenant_id.as_ref(),
        auth.tenant_id_env.as_ref(),
    )?;
    let role_arn = value(
        at,
        "role_arn",
        auth.role_arn.as_ref(),
        auth.role_arn_env.as_ref(),
    )?;
    let key = |f: &str| format!("{at}.auth.{f}");
    let file_readable = |field: &str, path: &std::path::Path| -> Result<(), Invalid> {
        std::fs::File::open(path).map(drop).map_err(|err| {
            Invalid::new(key(field), format!("cannot read {}: {err}", path.display()))
        })
    };
    match method {
        AuthMethod::ManagedIdentity => {}
        AuthMethod::ServicePrincipal => {
            required(at, "tenant_id", tenant_id.clone(), method)?;
            required(at, "client_id", client_id.clone(), method)?;
        }
        AuthMethod::WorkloadIdentity => {
            required(at, "tenant_id", tenant_id.clone(), method)?;
            required(at, "client_id", client_id.clone(), method)?;
            let file = auth
                .token_file
                .as_deref()
                .ok_or_else(|| Invalid::new(key("token_file"), "required for method workload_identity (the projected service-account token, e.g. /var/run/secrets/azure/tokens/azure-identity-token)"))?;
            file_readable("token_file", file)?;
        }
        AuthMethod::OidcFederation => {
            required(at, "role_arn", role_arn.clone(), method)?;
            if let Some(file) = &auth.token_file {
                file_readable("token_file", file)?;
            }
        }
        AuthMethod::GcpWif => {
            if auth.audience.is_none() {
                return Err(Invalid::new(
                    key("audience"),
                    "required for method gcp_wif (//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)",
                ));
            }
            if let Some(file) = &auth.token_file {
                file_readable("token_file", file)?;
            }
        }
        AuthMethod::KeyVault => {
            if auth.vault_url.is_none() {
                return Err(Invalid::new(
                    key("vault_url"),
                    "required for method key_vault (https://NAME.vault.azure.net)",
                ));
            }
            if auth.secret_name.is_none() {
                return Err(Invalid::new(
                    key("secret_name"),
                    "required for method key_vault",
                ));
            }
            if auth
                .refresh_interval
                .is_some_and(|d| d < Duration::from_secs(1))
            {
                return Err(Invalid::new(key("refresh_interval"), "must be at least 1s"));
            }
        }
        AuthMethod::None | AuthMethod::Static => {}
    }
    Ok(Resolved {
        client_id,
        tenant_id,
        role_arn,
    })
}

/// Checks a keyless method's keys and builds its flows without calling any endpoint, so
/// `check-config` refuses what start would refuse.
pub(crate) fn check(settings: &BackendSettings, at: &str) -> Result<(), Invalid> {
    let resolved = resolve(settings, at)?;
    flows(settings, at, &resolved).map(drop)
}

fn http(settings: &BackendSettings) -> HttpSettings {
    HttpSettings {
        timeout: settings.request_timeout,
        ca_file: settings.ca_file.clone(),
        allow_http: settings.allow_http,
    }
}

/// The flows of one backend, built.
enum Flow {
    Azure(Box<dyn cloud_identity::Fetch<Credential = object_store::azure::AzureCredential>>),
    Aws(Box<dyn cloud_identity::Fetch<Credential = object_store::aws::AwsCredential>>),
    Gcp(Box<dyn cloud_identity::Fetch<Credential = object_store::gcp::GcpCredential>>),
}

fn invalid(at: &str, err: cloud_identity::Error) -> Invalid {
    // The message of a config error starts with the field (`auth.tenant_id: ...`).
    let text = err.to_string();
    match text.split_once(": ") {
        Some((field, rest)) if field.starts_with("auth.") || field == "ca_file" => {
            Invalid::new(format!("{at}.{field}"), rest.to_owned())
        }
        _ => Invalid::new(format!("{at}.auth"), text),
    }
}

fn flows(settings: &BackendSettings, at: &str, r: &Resolved) -> Result<Option<Flow>, Invalid> {
    let auth = &settings.auth;
    let http = http(settings);
    let bad = |err| invalid(at, err);
    let managed = |resource: &str| -> Result<Arc<dyn BearerSource>, Invalid> {
        Ok(Arc::new(
            azure::ManagedIdentity::new(
                auth.imds_endpoint.as_deref(),
                resource,
                r.client_id.clone(),
                &http,
            )
            .map_err(bad)?,
        ))
    };
    let subject = || -> Result<SubjectToken, Invalid> {
        Ok(match &auth.token_file {
            Some(file) => SubjectToken::File(file.clone()),
            None => SubjectToken::Entra(managed(
                auth.token_resource.as_deref().unwrap_or(TOKEN_EXCHANGE),
            )?),
        })
    };
    let storage = |source: Arc<dyn BearerSource>, provider| {
        Flow::Azure(Box::new(azure::StorageBearer { source, provider }))
    };
    let entra = |proof| -> Result<Arc<dyn BearerSource>, Invalid> {
        Ok(Arc::new(
            azure::Entra::new(
                auth.authority_host.as_deref(),
                r.tenant_id.as_deref().unwrap_or_default(),
                r.client_id.clone().unwrap_or_default(),
                proof,
                azure::STORAGE_RESOURCE,
                &http,
            )
            .map_err(bad)?,
        ))
    };
    let vault = || -> Result<azure::KeyVaultSecret, Invalid> {
        azure::KeyVaultSecret::new(
            auth.vault_url.as_deref().unwrap_or_default(),
            auth.secret_name.as_deref().unwrap_or_default(),
            managed(azure::VAULT_RESOURCE)?,
            &http,
        )
        .map_err(bad)
    };
    Ok(Some(match (auth.method, settings.kind) {
        (AuthMethod::ManagedIdentity, BackendType::Azure) => {
            storage(managed(azure::STORAGE_RESOURCE)?, "managed_identity")
        }
        (AuthMethod::ServicePrincipal, BackendType::Azure) => {
            let source = credentials::choose_source(
                "client_secret",
                auth.client_secret_env.as_deref(),
                auth.client_secret_file.as_deref(),
                None,
            )
            .map_err(|err| Invalid::new(format!("{at}.auth.client_secret"), err.to_string()))?
            .ok_or_else(|| {
                Invalid::new(
                    format!("{at}.auth.client_secret_env"),
                    "required for method service_principal",
                )
            })?;
            storage(entra(ClientProof::Secret(source))?, "service_principal")
        }
        (AuthMethod::WorkloadIdentity, BackendType::Azure) => storage(
            entra(ClientProof::Assertion(
                auth.token_file.clone().unwrap_or_default(),
            ))?,
            "workload_identity",
        ),
        (AuthMethod::KeyVault, BackendType::Azure) => {
            Flow::Azure(Box::new(azure::VaultAccountKey(vault()?)))
        }
        (AuthMethod::KeyVault, BackendType::S3) => {
            Flow::Aws(Box::new(cloud_identity::aws::VaultKeys(vault()?)))
        }
        (AuthMethod::OidcFederation, BackendType::S3) => Flow::Aws(Box::new(
            cloud_identity::aws::WebIdentity::new(
                auth.sts_endpoint.as_deref(),
                r.role_arn.clone().unwrap_or_default(),
                auth.session_name
                    .clone()
                    .unwrap_or_else(|| format!("warpdrive-{}", settings.name)),
                subject()?,
                &http,
            )
            .map_err(bad)?,
        )),
        (AuthMethod::GcpWif, BackendType::Gcs) => Flow::Gcp(Box::new(
            cloud_identity::gcp::WorkloadIdentity::new(
                auth.sts_endpoint.as_deref(),
                auth.iam_endpoint.as_deref(),
                auth.audience.clone().unwrap_or_default(),
                auth.service_account.clone(),
                subject()?,
                &http,
            )
            .map_err(bad)?,
        )),
        _ => return Ok(None),
    }))
}

/// A backend's refreshing credential, typed for its store.
pub(crate) enum Keyless {
    /// For `MicrosoftAzureBuilder::with_credentials`.
    Azure(AzureCredentialProvider),
    /// For `AmazonS3Builder::with_credentials`.
    Aws(AwsCredentialProvider),
    /// For `GoogleCloudStorageBuilder::with_credentials`.
    Gcp(GcpCredentialProvider),
}

/// Starts the refresh task of a keyless backend (`None` for static and none).
pub(crate) fn start(
    settings: &BackendSettings,
    at: &str,
    metrics: &CredentialMetrics,
) -> anyhow::Result<Option<Keyless>> {
    let resolved = resolve(settings, at)
        .map_err(|i| anyhow::anyhow!("config key `{}`: {}", i.key, i.message))?;
    let Some(flow) = flows(settings, at, &resolved)
        .map_err(|i| anyhow::anyhow!("config key `{}`: {}", i.key, i.message))?
    else {
        return Ok(None);
    };
    let refresh = RefreshSettings {
        every: settings
            .auth
            .refresh_interval
            .unwrap_or(Duration::from_secs(300)),
        // Half the backend's own call timeout: a reader with no valid credential must hear
        // "no valid credential" (EACCES, logged with backend and provider) before the call's
        // timeout turns the same wait into an anonymous EIO timeout.
        wait: settings.request_timeout / 2,
        ..RefreshSettings::default()
    };
    let name = &settings.name;
    Ok(Some(match flow {
        Flow::Azure(fetch) => Keyless::Azure(Arc::new(Refresher::start(
            name,
            fetch,
            refresh,
            metrics.clone(),
        ))),
        Flow::Aws(fetch) => Keyless::Aws(Arc::new(Refresher::start(
            name,
            fetch,
            refresh,
            metrics.clone(),
        ))),
        Flow::Gcp(fetch) => Keyless::Gcp(Arc::new(Refresher::start(
            name,
            fetch,
            refresh,
            metrics.clone(),
        ))),
    }))
}
