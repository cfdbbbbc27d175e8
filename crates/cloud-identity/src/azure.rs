//! Azure: tokens from the instance metadata service (managed identity), from Entra ID with a
//! client secret (service principal) or a federated assertion (workload identity), and secrets
//! from Key Vault. Each answers in the shape Microsoft documents, errors included.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credentials::{ExposeSecret, SecretSource, SecretString};
use object_store::azure::{AzureAccessKey, AzureCredential};

use crate::http::{self, Endpoint, HttpSettings};
use crate::{Error, Fetch, Issued};

/// The resource (v1) of Azure Storage.
pub const STORAGE_RESOURCE: &str = "https://storage.azure.com";
/// The resource (v1) of Key Vault.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Azure IMDS.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// Entra ID (public cloud); sovereign clouds have their own authority host.
pub const AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Something that hands out Entra bearer tokens for one resource.
#[async_trait]
pub trait BearerSource: Send + Sync {
    /// A token and its expiry.
    async fn bearer(&self) -> Result<(SecretString, Option<SystemTime>), Error>;
}

fn expiry_in(seconds: Option<u64>) -> Option<SystemTime> {
    seconds.map(|s| SystemTime::now() + Duration::from_secs(s))
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: Option<SecretString>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

impl TokenReply {
    fn into_token(self, endpoint: &url::Url) -> Result<(SecretString, Option<SystemTime>), Error> {
        let token = self.access_token.ok_or_else(|| Error::Malformed {
            endpoint: http::shown(endpoint),
            detail: "no access_token".into(),
        })?;
        // IMDS sends `expires_on` (Unix seconds, as a string); Entra v2 sends `expires_in`.
        let expires = match self.expires_on.as_ref().and_then(http::seconds) {
            Some(unix) => Some(SystemTime::UNIX_EPOCH + Duration::from_secs(unix)),
            None => expiry_in(self.expires_in.as_ref().and_then(http::seconds)),
        };
        Ok((token, expires))
    }
}

/// Managed identity through IMDS, for one resource; `client_id` picks a user-assigned one.
pub struct ManagedIdentity {
    client: reqwest::Client,
    endpoint: Endpoint,
    resource: String,
    client_id: Option<String>,
}

impl ManagedIdentity {
    /// `endpoint`: IMDS (default [`IMDS_ENDPOINT`]; plain http by design).
    pub fn new(
        endpoint: Option<&str>,
        resource: &str,
        client_id: Option<String>,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        Ok(Self {
            client: http::client(settings)?,
            endpoint: Endpoint::plain(endpoint.unwrap_or(IMDS_ENDPOINT), "auth.imds_endpoint")?,
            resource: resource.to_owned(),
            client_id,
        })
    }
}

#[async_trait]
impl BearerSource for ManagedIdentity {
    async fn bearer(&self) -> Result<(SecretString, Option<SystemTime>), Error> {
        let url = self.endpoint.url();
        let mut query = vec![
            ("api-version", "2018-02-01"),
            ("resource", self.resource.as_str()),
        ];
        if let Some(id) = &self.client_id {
            query.push(("client_id", id.as_str()));
        }
        let request = self
            .client
            .get(url.clone())
            .header("Metadata", "true")
            .query(&query);
        let body = http::send(request, url, http::oauth_error).await?;
        http::json::<TokenReply>(&body, url)?.into_token(url)
    }
}

/// How an Entra app proves itself.
pub enum ClientProof {
    /// A client secret, read from its env var or file on every request (rotation).
    Secret(SecretSource),
    /// A federated assertion: the projected service-account token file, re-read every time.
    Assertion(PathBuf),
}

/// Entra ID's client-credentials flow (v2 endpoint), for one scope.
pub struct Entra {
    client: reqwest::Client,
    token_url: url::Url,
    client_id: String,
    proof: ClientProof,
    scope: String,
}

impl Entra {
    /// `authority`: the authority host (default [`AUTHORITY_HOST`]); `resource` becomes the
    /// scope `<resource>/.default`.
    pub fn new(
        authority: Option<&str>,
        tenant: &str,
        client_id: String,
        proof: ClientProof,
        resource: &str,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        if tenant.is_empty() || tenant.contains(['/', '?', '#']) {
            return Err(Error::Config(format!(
                "auth.tenant_id: `{tenant}` is no tenant id"
            )));
        }
        let authority = Endpoint::parse(
            authority.unwrap_or(AUTHORITY_HOST),
            "auth.authority_host",
            settings,
        )?;
        Ok(Self {
            client: http::client(settings)?,
            token_url: authority.join(&format!("{tenant}/oauth2/v2.0/token")),
            client_id,
            proof,
            scope: format!("{}/.default", resource.trim_end_matches('/')),
        })
    }
}

#[async_trait]
impl BearerSource for Entra {
    async fn bearer(&self) -> Result<(SecretString, Option<SystemTime>), Error> {
        let proof = match &self.proof {
            ClientProof::Secret(source) => source.resolve()?,
            ClientProof::Assertion(path) => {
                crate::subject::SubjectToken::File(path.clone())
                    .read()
                    .await?
            }
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("scope", &self.scope),
        ];
        match &self.proof {
            ClientProof::Secret(_) => form.push(("client_secret", proof.expose_secret())),
            ClientProof::Assertion(_) => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ));
                form.push(("client_assertion", proof.expose_secret()));
            }
        }
        let request = self.client.post(self.token_url.clone()).form(&form);
        let body = http::send(request, &self.token_url, http::oauth_error).await?;
        http::json::<TokenReply>(&body, &self.token_url)?.into_token(&self.token_url)
    }
}

/// Bearer tokens for Azure Storage from any [`BearerSource`].
pub struct StorageBearer {
    /// Where the tokens come from.
    pub source: Arc<dyn BearerSource>,
    /// The config's method name.
    pub provider: &'static str,
}

#[async_trait]
impl Fetch for StorageBearer {
    type Credential = AzureCredential;
    fn provider(&self) -> &'static str {
        self.provider
    }
    async fn fetch(&self) -> Result<Issued<AzureCredential>, Error> {
        let (token, expires_at) = self.source.bearer().await?;
        Ok(Issued {
            credential: AzureCredential::BearerToken(token.expose_secret().to_owned()),
            expires_at,
        })
    }
}

/// A Key Vault secret, read with a managed-identity token for the vault.
pub struct KeyVaultSecret {
    client: reqwest::Client,
    url: url::Url,
    identity: Arc<dyn BearerSource>,
}

/// Key Vault errors: `{"error": {"code": "SecretNotFound", "message": "..."}}`.
fn vault_error(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    Some(format!(
        "{}: {}",
        error
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("error"),
        error
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
    ))
}

impl KeyVaultSecret {
    /// The secret `name` in the vault at `vault_url` (`https://NAME.vault.azure.net`).
    pub fn new(
        vault_url: &str,
        name: &str,
        identity: Arc<dyn BearerSource>,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::Config(format!(
                "auth.secret_name: `{name}` is no Key Vault secret name (letters, digits, -)"
            )));
        }
        let vault = Endpoint::parse(vault_url, "auth.vault_url", settings)?;
        let mut url = vault.join(&format!("secrets/{name}"));
        url.set_query(Some("api-version=7.4"));
        Ok(Self {
            client: http::client(settings)?,
            url,
            identity,
        })
    }

    /// The secret's current value.
    pub async fn value(&self) -> Result<SecretString, Error> {
        let (token, _) = self.identity.bearer().await?;
        let request = self
            .client
            .get(self.url.clone())
            .bearer_auth(token.expose_secret());
        let body = http::send(request, &self.url, vault_error).await?;
        #[derive(serde::Deserialize)]
        struct Secret {
            value: Option<SecretString>,
        }
        http::json::<Secret>(&body, &self.url)?
            .value
            .ok_or_else(|| Error::Malformed {
                endpoint: http::shown(&self.url),
                detail: "the secret has no value".into(),
            })
    }
}

/// An Azure Storage account key kept in Key Vault, fetched again on every refresh.
pub struct VaultAccountKey(pub KeyVaultSecret);

#[async_trait]
impl Fetch for VaultAccountKey {
    type Credential = AzureCredential;
    fn provider(&self) -> &'static str {
        "key_vault"
    }
    async fn fetch(&self) -> Result<Issued<AzureCredential>, Error> {
        let value = self.0.value().await?;
        let key = AzureAccessKey::try_new(value.expose_secret().trim()).map_err(|_| {
            Error::Malformed {
                endpoint: http::shown(&self.0.url),
                detail: "the secret is no base64 account key".into(),
            }
        })?;
        Ok(Issued {
            credential: AzureCredential::AccessKey(key),
            expires_at: None,
        })
    }
}
