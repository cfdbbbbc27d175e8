//! AWS: `AssumeRoleWithWebIdentity` at STS with a JWT (a projected token file as IRSA does, or
//! an Entra token), giving temporary keys with a session token; and static keys kept in Key
//! Vault.

use std::time::SystemTime;

use async_trait::async_trait;
use credentials::{ExposeSecret, SecretString};
use object_store::aws::AwsCredential;

use crate::azure::KeyVaultSecret;
use crate::http::{self, Endpoint, HttpSettings};
use crate::subject::SubjectToken;
use crate::{Error, Fetch, Issued};

/// The global STS endpoint (regional ones are `https://sts.REGION.amazonaws.com`).
pub const STS_ENDPOINT: &str = "https://sts.amazonaws.com";

/// STS web-identity federation for one role.
pub struct WebIdentity {
    client: reqwest::Client,
    endpoint: Endpoint,
    role_arn: String,
    session_name: String,
    subject: SubjectToken,
}

impl WebIdentity {
    /// Assumes `role_arn` as `session_name` with the token from `subject`.
    pub fn new(
        endpoint: Option<&str>,
        role_arn: String,
        session_name: String,
        subject: SubjectToken,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        if !role_arn.starts_with("arn:") || role_arn.split(':').count() < 6 {
            return Err(Error::Config(format!(
                "auth.role_arn: `{role_arn}` is no role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            )));
        }
        Ok(Self {
            client: http::client(settings)?,
            endpoint: Endpoint::parse(
                endpoint.unwrap_or(STS_ENDPOINT),
                "auth.sts_endpoint",
                settings,
            )?,
            role_arn,
            session_name,
            subject,
        })
    }
}

/// STS errors: `<ErrorResponse><Error><Code>…</Code><Message>…</Message></Error></ErrorResponse>`.
fn sts_error(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorResponse {
        #[serde(rename = "Error")]
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        #[serde(rename = "Code")]
        code: String,
        #[serde(rename = "Message", default)]
        message: String,
    }
    let parsed: ErrorResponse = quick_xml::de::from_str(body).ok()?;
    Some(format!("{}: {}", parsed.error.code, parsed.error.message))
}

#[derive(serde::Deserialize)]
struct AssumeResponse {
    #[serde(rename = "AssumeRoleWithWebIdentityResult")]
    result: AssumeResult,
}

#[derive(serde::Deserialize)]
struct AssumeResult {
    #[serde(rename = "Credentials")]
    credentials: StsCredentials,
}

#[derive(serde::Deserialize)]
struct StsCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "SecretAccessKey")]
    secret_access_key: SecretString,
    #[serde(rename = "SessionToken")]
    session_token: SecretString,
    #[serde(rename = "Expiration")]
    expiration: String,
}

pub(crate) fn rfc3339(text: &str, endpoint: &url::Url) -> Result<SystemTime, Error> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(SystemTime::from)
        .map_err(|err| Error::Malformed {
            endpoint: http::shown(endpoint),
            detail: format!("expiry `{text}`: {err}"),
        })
}

#[async_trait]
impl Fetch for WebIdentity {
    type Credential = AwsCredential;
    fn provider(&self) -> &'static str {
        "oidc_federation"
    }
    async fn fetch(&self) -> Result<Issued<AwsCredential>, Error> {
        let token = self.subject.read().await?;
        let url = self.endpoint.url();
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.session_name.as_str()),
            ("WebIdentityToken", token.expose_secret()),
        ];
        let request = self.client.post(url.clone()).form(&form);
        let body = http::send(request, url, sts_error).await?;
        let parsed: AssumeResponse =
            quick_xml::de::from_str(&body).map_err(|err| Error::Malformed {
                endpoint: http::shown(url),
                detail: format!("AssumeRoleWithWebIdentityResponse: {err}"),
            })?;
        let creds = parsed.result.credentials;
        Ok(Issued {
            expires_at: Some(rfc3339(&creds.expiration, url)?),
            credential: AwsCredential {
                key_id: creds.access_key_id,
                secret_key: creds.secret_access_key.expose_secret().to_owned(),
                token: Some(creds.session_token.expose_secret().to_owned()),
            },
        })
    }
}

/// S3 keys kept in Key Vault as JSON `{"access_key_id": …, "secret_access_key": …}`, fetched
/// again on every refresh.
pub struct VaultKeys(pub KeyVaultSecret);

#[async_trait]
impl Fetch for VaultKeys {
    type Credential = AwsCredential;
    fn provider(&self) -> &'static str {
        "key_vault"
    }
    async fn fetch(&self) -> Result<Issued<AwsCredential>, Error> {
        #[derive(serde::Deserialize)]
        struct Keys {
            access_key_id: String,
            secret_access_key: SecretString,
            #[serde(default)]
            session_token: Option<SecretString>,
        }
        let value = self.0.value().await?;
        let keys: Keys =
            serde_json::from_str(value.expose_secret()).map_err(|err| Error::Malformed {
                endpoint: "key vault secret".into(),
                detail: format!(
                    "want JSON {{\"access_key_id\": …, \"secret_access_key\": …}}: {}",
                    http::json_problem(&err)
                ),
            })?;
        Ok(Issued {
            credential: AwsCredential {
                key_id: keys.access_key_id,
                secret_key: keys.secret_access_key.expose_secret().to_owned(),
                token: keys.session_token.map(|t| t.expose_secret().to_owned()),
            },
            expires_at: None,
        })
    }
}
