//! GCP workload identity federation: a JWT exchanged at Google's STS for a federated token,
//! then (optionally) a service account impersonated through IAM Credentials'
//! `generateAccessToken`, as Google documents it.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use credentials::{ExposeSecret, SecretString};
use object_store::gcp::GcpCredential;

use crate::http::{self, Endpoint, HttpSettings};
use crate::subject::SubjectToken;
use crate::{Error, Fetch, Issued};

/// Google's STS.
pub const STS_ENDPOINT: &str = "https://sts.googleapis.com/v1/token";
/// IAM Credentials.
pub const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The scope object storage needs.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The federation of one workload identity pool provider.
pub struct WorkloadIdentity {
    client: reqwest::Client,
    sts: Endpoint,
    iam: Endpoint,
    audience: String,
    service_account: Option<String>,
    subject: SubjectToken,
}

impl WorkloadIdentity {
    /// `audience`: `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER`.
    pub fn new(
        sts_endpoint: Option<&str>,
        iam_endpoint: Option<&str>,
        audience: String,
        service_account: Option<String>,
        subject: SubjectToken,
        settings: &HttpSettings,
    ) -> Result<Self, Error> {
        if !audience.starts_with("//iam.googleapis.com/")
            || !audience.contains("/workloadIdentityPools/")
        {
            return Err(Error::Config(format!(
                "auth.audience: `{audience}` is no workload identity provider (//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"
            )));
        }
        if let Some(sa) = &service_account
            && (!sa.contains('@') || sa.contains(['/', '?', '#']))
        {
            return Err(Error::Config(format!(
                "auth.service_account: `{sa}` is no service account e-mail"
            )));
        }
        Ok(Self {
            client: http::client(settings)?,
            sts: Endpoint::parse(
                sts_endpoint.unwrap_or(STS_ENDPOINT),
                "auth.sts_endpoint",
                settings,
            )?,
            iam: Endpoint::parse(
                iam_endpoint.unwrap_or(IAM_CREDENTIALS_ENDPOINT),
                "auth.iam_endpoint",
                settings,
            )?,
            audience,
            service_account,
            subject,
        })
    }
}

#[async_trait]
impl Fetch for WorkloadIdentity {
    type Credential = GcpCredential;
    fn provider(&self) -> &'static str {
        "gcp_wif"
    }
    async fn fetch(&self) -> Result<Issued<GcpCredential>, Error> {
        let subject = self.subject.read().await?;
        let url = self.sts.url();
        let request = self.client.post(url.clone()).json(&serde_json::json!({
            "grantType": "urn:ietf:params:oauth:grant-type:token-exchange",
            "audience": self.audience,
            "scope": SCOPE,
            "requestedTokenType": "urn:ietf:params:oauth:token-type:access_token",
            "subjectToken": subject.expose_secret(),
            "subjectTokenType": "urn:ietf:params:oauth:token-type:jwt",
        }));
        let body = http::send(request, url, http::oauth_error).await?;
        #[derive(serde::Deserialize)]
        struct Exchanged {
            access_token: SecretString,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let exchanged: Exchanged = http::json(&body, url)?;
        let Some(sa) = &self.service_account else {
            return Ok(Issued {
                expires_at: exchanged
                    .expires_in
                    .as_ref()
                    .and_then(http::seconds)
                    .map(|s| SystemTime::now() + Duration::from_secs(s)),
                credential: GcpCredential {
                    bearer: exchanged.access_token.expose_secret().to_owned(),
                },
            });
        };
        let url = self.iam.join(&format!(
            "v1/projects/-/serviceAccounts/{sa}:generateAccessToken"
        ));
        let request = self
            .client
            .post(url.clone())
            .bearer_auth(exchanged.access_token.expose_secret())
            .json(&serde_json::json!({"scope": [SCOPE], "lifetime": "3600s"}));
        let body = http::send(request, &url, http::oauth_error).await?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Impersonated {
            access_token: SecretString,
            expire_time: String,
        }
        let token: Impersonated = http::json(&body, &url)?;
        Ok(Issued {
            expires_at: Some(crate::aws::rfc3339(&token.expire_time, &url)?),
            credential: GcpCredential {
                bearer: token.access_token.expose_secret().to_owned(),
            },
        })
    }
}
