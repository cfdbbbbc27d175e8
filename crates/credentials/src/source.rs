//! Where a secret lives, and reading it into a [`SecretString`].

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use secrecy::zeroize::Zeroize;

use crate::Error;
use crate::expand::{EnvLookup, Piece, ProcessEnv, parse};

/// Where a secret lives; printing it shows the name of the place, never the value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, such as a mounted Kubernetes Secret; one trailing newline is ignored.
    File(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "environment variable `{var}`"),
            Self::File(path) => write!(f, "file `{}`", path.display()),
        }
    }
}

impl SecretSource {
    /// Parses a `${VAR}` reference; anything else is refused, so no literal secret is accepted.
    pub fn from_reference(reference: &str) -> Result<Self, Error> {
        // The error must not echo the text: a user may have pasted a literal secret here.
        let refuse = || Error::BadReference {
            reason: "a secret field takes exactly one `${VAR}` reference; literal secrets are \
                     refused (use the `_env` or `_file` form, or `${VAR}`)"
                .into(),
        };
        match parse(reference).map_err(|_| refuse())?.as_slice() {
            [Piece::Var(name)] => Ok(Self::Env((*name).to_owned())),
            _ => Err(refuse()),
        }
    }

    /// Reads the secret from the process environment or the file system.
    pub fn resolve(&self) -> Result<SecretString, Error> {
        self.resolve_with(&ProcessEnv)
    }

    /// Reads the secret, looking environment variables up in `env`.
    pub fn resolve_with(&self, env: &dyn EnvLookup) -> Result<SecretString, Error> {
        match self {
            Self::Env(var) => read_env(var, env),
            Self::File(path) => read_file(path),
        }
    }
}

fn read_env(var: &str, env: &dyn EnvLookup) -> Result<SecretString, Error> {
    let raw = env
        .var_os(var)
        .ok_or_else(|| Error::EnvMissing { var: var.into() })?;
    let value = raw
        .into_string()
        .map_err(|_| Error::EnvNotUnicode { var: var.into() })?;
    if value.is_empty() {
        return Err(Error::Empty {
            what: format!("environment variable `{var}`"),
        });
    }
    tracing::debug!(source = %format_args!("environment variable `{var}`"), "secret read");
    Ok(SecretString::from(value))
}

fn read_file(path: &Path) -> Result<SecretString, Error> {
    let file_err = |source| Error::FileRead {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(file_err)?;
    let mode = file.metadata().map_err(file_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:04o}", mode & 0o7777).to_string(),
            "secret file is readable by group or others; restrict it to 0600 or 0400 \
             (Kubernetes: set defaultMode: 0400 on the Secret volume)"
        );
    }
    let mut bytes = Vec::new();
    if let Err(source) = file.read_to_end(&mut bytes) {
        bytes.zeroize();
        return Err(file_err(source));
    }
    let mut value = String::from_utf8(bytes).map_err(|err| {
        err.into_bytes().zeroize();
        Error::FileNotUtf8 {
            path: path.to_owned(),
        }
    })?;
    let trimmed = value.trim_end_matches(['\n', '\r']).len();
    // The newlines cut off are not secret, so truncating (not wiping) them is enough.
    value.truncate(trimmed);
    if value.is_empty() {
        return Err(Error::Empty {
            what: format!("secret file `{}`", path.display()),
        });
    }
    tracing::debug!(path = %path.display(), "secret read");
    Ok(SecretString::from(value))
}

/// Picks the one source given for a secret field named `field` in config.
///
/// Config schemas offer `<field>_env` (a variable name), `<field>_file` (a path) and
/// `<field>` (a `${VAR}` reference); giving more than one is an error naming them all.
pub fn choose_source(
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
    reference: Option<&str>,
) -> Result<Option<SecretSource>, Error> {
    let mut given = Vec::new();
    if let Some(var) = env {
        if var.is_empty() || var.contains(['$', '{', '}', '=']) {
            return Err(Error::BadReference {
                reason: format!("`{field}_env` takes the name of an environment variable"),
            });
        }
        given.push((format!("`{field}_env`"), SecretSource::Env(var.to_owned())));
    }
    if let Some(path) = file {
        given.push((
            format!("`{field}_file`"),
            SecretSource::File(path.to_owned()),
        ));
    }
    if let Some(text) = reference {
        let source = SecretSource::from_reference(text).map_err(|err| match err {
            Error::BadReference { reason } => Error::BadReference {
                reason: format!("`{field}`: {reason}"),
            },
            other => other,
        })?;
        given.push((format!("`{field}`"), source));
    }
    match given.len() {
        0 | 1 => Ok(given.pop().map(|(_, source)| source)),
        _ => Err(Error::AmbiguousSource {
            reason: format!(
                "{} are all set; give the secret in exactly one of them",
                given
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use secrecy::ExposeSecret;

    use super::*;
    use crate::MapEnv;

    const SECRET: &str = "s3cr3t-Value-0xDEADBEEF";

    fn secret_file(contents: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn env_source_reads_value() {
        let env = MapEnv::from_pairs([("API_KEY", SECRET)]);
        let got = SecretSource::Env("API_KEY".into())
            .resolve_with(&env)
            .unwrap();
        assert_eq!(got.expose_secret(), SECRET);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = MapEnv::from_pairs([("EMPTY", "")]);
        let missing = SecretSource::Env("NOPE".into())
            .resolve_with(&env)
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable `NOPE` is not set"
        );
        let empty = SecretSource::Env("EMPTY".into())
            .resolve_with(&env)
            .unwrap_err();
        assert_eq!(empty.to_string(), "environment variable `EMPTY` is empty");
    }

    #[test]
    fn file_source_trims_trailing_newlines_only() {
        let file = secret_file(&format!("  {SECRET}\r\n\n"), 0o600);
        let got = SecretSource::File(file.path().into()).resolve().unwrap();
        assert_eq!(got.expose_secret(), format!("  {SECRET}"));
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = SecretSource::File("/nonexistent/key".into())
            .resolve()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read secret file `/nonexistent/key`"
        );
        let empty = secret_file("\n", 0o600);
        let err = SecretSource::File(empty.path().into())
            .resolve()
            .unwrap_err();
        assert!(err.to_string().ends_with("is empty"), "{err}");
        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(&[0xff, 0xfe, b'a']).unwrap();
        let err = SecretSource::File(bad.path().into()).resolve().unwrap_err();
        assert!(matches!(err, Error::FileNotUtf8 { .. }), "{err}");
    }

    #[test]
    fn world_readable_file_warns() {
        let file = secret_file(SECRET, 0o644);
        let logs = capture_logs(|| {
            SecretSource::File(file.path().into()).resolve().unwrap();
        });
        assert!(logs.contains("readable by group or others"), "{logs}");
        assert!(logs.contains("0644"), "{logs}");
        assert!(!logs.contains(SECRET));
        let private = secret_file(SECRET, 0o400);
        let logs = capture_logs(|| {
            SecretSource::File(private.path().into()).resolve().unwrap();
        });
        assert!(!logs.contains("readable by group"), "{logs}");
    }

    #[test]
    fn reference_must_be_exactly_one_variable() {
        assert_eq!(
            SecretSource::from_reference("${TRUENAS_API_KEY}").unwrap(),
            SecretSource::Env("TRUENAS_API_KEY".into())
        );
        for bad in [SECRET, "prefix-${A}", "${A}${B}", "${", "$$"] {
            let err = SecretSource::from_reference(bad).unwrap_err();
            assert!(!err.to_string().contains(bad) || bad.len() < 4, "{err}");
            assert!(
                err.to_string().contains("literal secrets are refused"),
                "{err}"
            );
        }
    }

    #[test]
    fn choose_source_takes_one_and_names_clashes() {
        assert_eq!(choose_source("api_key", None, None, None).unwrap(), None);
        assert_eq!(
            choose_source("api_key", Some("K"), None, None).unwrap(),
            Some(SecretSource::Env("K".into()))
        );
        assert_eq!(
            choose_source("api_key", None, Some(Path::new("/k")), None).unwrap(),
            Some(SecretSource::File("/k".into()))
        );
        let err = choose_source("api_key", Some("K"), Some(Path::new("/k")), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`api_key_env` and `api_key_file` are all set; give the secret in exactly one of them"
        );
        let err = choose_source("api_key", None, None, Some(SECRET)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad `${VAR}` reference: `api_key`:"),
            "{err}"
        );
        assert!(!err.to_string().contains(SECRET));
        assert!(choose_source("api_key", Some("${K}"), None, None).is_err());
    }

    #[test]
    fn debug_and_display_show_no_value() {
        let env = MapEnv::from_pairs([("API_KEY", SECRET)]);
        let secret = SecretSource::Env("API_KEY".into())
            .resolve_with(&env)
            .unwrap();
        assert!(!format!("{secret:?}").contains(SECRET));
    }

    /// Runs `f` under a TRACE-level subscriber and returns everything it logged.
    fn capture_logs(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || BufWriter(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct BufWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for BufWriter {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
