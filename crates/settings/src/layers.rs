//! The three layers (file, environment, flags), `${VAR}` expansion and error translation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use credentials::{EnvLookup, ProcessEnv};
use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Invalid, KeyError};

/// A binary's config schema: a serde type with `deny_unknown_fields` on every struct.
pub trait Schema: Serialize + DeserializeOwned {
    /// Prefix of environment overrides, for example `TNS_CSI_`.
    const ENV_PREFIX: &'static str;
    /// Keys whose strings are `${VAR}` secret references, left unexpanded so the secret is
    /// read straight into a secret type; `*` matches one segment (a list index or map key).
    const SECRET_REFERENCE_KEYS: &'static [&'static str] = &[];

    /// Rules that serde cannot express (one of two fields, URL schemes, ranges).
    fn validate(&self) -> Vec<Invalid> {
        Vec::new()
    }
}

/// One command-line override: the key it sets and the flag that set it, for error messages.
struct FlagValue {
    key: String,
    flag: String,
    value: Value,
}

/// Builds a config from a file, the environment and flags, in that order of precedence.
pub struct Loader {
    file: Option<PathBuf>,
    env_vars: Option<Vec<(String, String)>>,
    flags: Vec<FlagValue>,
    lookup: Box<dyn EnvLookup>,
}

impl Default for Loader {
    fn default() -> Self {
        Self {
            file: None,
            env_vars: None,
            flags: Vec::new(),
            lookup: Box::new(ProcessEnv),
        }
    }
}

impl std::fmt::Debug for Loader {
    // Environment values may be secrets; show only what shapes the load.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader")
            .field("file", &self.file)
            .field(
                "flags",
                &self.flags.iter().map(|flag| &flag.flag).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Loader {
    /// A loader reading the process environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the YAML file at `path` as the lowest layer; a missing file is an error.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Uses these variables instead of the process environment (tests, embedding); both the
    /// override layer and `${VAR}` expansion see only them.
    pub fn env_vars<'a>(mut self, vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.lookup = Box::new(credentials::MapEnv(vars.iter().cloned().collect()));
        self.env_vars = Some(vars);
        self
    }

    /// Sets `key` (dotted path) from the command-line flag `flag`, above every other layer.
    pub fn flag(mut self, key: &str, flag: &str, value: impl Into<Value>) -> Self {
        self.flags.push(FlagValue {
            key: key.into(),
            flag: flag.into(),
            value: value.into(),
        });
        self
    }

    /// Merges the layers, expands `${VAR}`, deserializes and validates.
    pub fn load<T: Schema>(self) -> Result<T, Error> {
        let mut figment = Figment::new();
        if let Some(path) = &self.file {
            figment = figment.merge(file_layer(path)?);
        }
        figment = figment.merge(EnvLayer::new(T::ENV_PREFIX, self.env_vars)?);
        figment = figment.merge(FlagLayer(self.flags));

        let merged: Dict = figment.extract().map_err(|err| key_errors(err, &figment))?;
        let mut expand_errors = Vec::new();
        let expanded = expand_dict(
            merged,
            &mut Vec::new(),
            T::SECRET_REFERENCE_KEYS,
            self.lookup.as_ref(),
            &mut expand_errors,
        );
        if !expand_errors.is_empty() {
            return Err(Error::Keys(
                expand_errors
                    .into_iter()
                    .map(|(key, message)| KeyError {
                        origin: origin(&figment, &key),
                        key,
                        message,
                    })
                    .collect(),
            ));
        }
        let config: T = Figment::from(Serialized::defaults(expanded))
            .extract()
            .map_err(|err| key_errors(err, &figment))?;
        let invalid = config.validate();
        if invalid.is_empty() {
            Ok(config)
        } else {
            Err(Error::Invalid(invalid))
        }
    }
}

fn file_layer(path: &Path) -> Result<Figment, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    // An empty or comment-only file is a valid "all defaults" config.
    let only_comments = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if only_comments {
        return Ok(Figment::new());
    }
    Ok(Figment::from(Yaml::file_exact(path)))
}

/// Environment overrides: `PREFIX_A__B=v` sets `a.b`; values parse like YAML scalars.
struct EnvLayer {
    prefix: &'static str,
    entries: Vec<(Vec<String>, Value)>,
}

impl EnvLayer {
    fn new(prefix: &'static str, given: Option<Vec<(String, String)>>) -> Result<Self, Error> {
        let vars = match given {
            Some(vars) => vars,
            None => {
                let mut vars = Vec::new();
                for (name, value) in std::env::vars_os() {
                    let Some(name) = name.to_str().map(str::to_owned) else {
                        continue;
                    };
                    if !name.starts_with(prefix) {
                        continue;
                    }
                    let value = value
                        .into_string()
                        .map_err(|_| Error::EnvNotUnicode { var: name.clone() })?;
                    vars.push((name, value));
                }
                vars
            }
        };
        let entries = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(prefix)?;
                // `PREFIX_CONFIG` names the config file (each binary's `--config` reads it);
                // it is no key of the config itself.
                if rest == "CONFIG" {
                    return None;
                }
                let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
                (!path.iter().any(String::is_empty)).then(|| (path, parse_scalar(&value)))
            })
            .collect();
        Ok(Self { prefix, entries })
    }
}

fn parse_scalar(text: &str) -> Value {
    Value::from_str(text).unwrap_or_else(|never| match never {})
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        let prefix = self.prefix;
        Metadata::named("environment variable").interpolater(move |_: &Profile, keys: &[&str]| {
            format!("{prefix}{}", keys.join("__").to_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (path, value) in &self.entries {
            insert(&mut dict, path, value.clone());
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Command-line flags, remembered by name so errors can say `--metrics-addr`.
struct FlagLayer(Vec<FlagValue>);

impl Provider for FlagLayer {
    fn metadata(&self) -> Metadata {
        let names: HashMap<String, String> = self
            .0
            .iter()
            .map(|flag| (flag.key.clone(), flag.flag.clone()))
            .collect();
        Metadata::named("command-line flag").interpolater(move |_: &Profile, keys: &[&str]| {
            names
                .get(&keys.join("."))
                .cloned()
                .unwrap_or_else(|| keys.join("."))
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for flag in &self.0 {
            let path: Vec<String> = flag.key.split('.').map(str::to_owned).collect();
            insert(&mut dict, &path, flag.value.clone());
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

fn matches_pattern(path: &[String], pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len() && parts.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

fn expand_dict(
    dict: Dict,
    path: &mut Vec<String>,
    secret_keys: &[&str],
    lookup: &dyn EnvLookup,
    errors: &mut Vec<(String, String)>,
) -> Dict {
    dict.into_iter()
        .map(|(key, value)| {
            path.push(key.clone());
            let value = expand_value(value, path, secret_keys, lookup, errors);
            path.pop();
            (key, value)
        })
        .collect()
}

fn expand_value(
    value: Value,
    path: &mut Vec<String>,
    secret_keys: &[&str],
    lookup: &dyn EnvLookup,
    errors: &mut Vec<(String, String)>,
) -> Value {
    match value {
        Value::String(tag, text) => {
            if secret_keys
                .iter()
                .any(|pattern| matches_pattern(path, pattern))
            {
                return Value::String(tag, text);
            }
            match credentials::expand(&text, lookup) {
                Ok(expanded) => Value::String(tag, expanded),
                Err(err) => {
                    errors.push((path.join("."), err.to_string()));
                    Value::String(tag, text)
                }
            }
        }
        Value::Dict(tag, dict) => {
            Value::Dict(tag, expand_dict(dict, path, secret_keys, lookup, errors))
        }
        Value::Array(tag, items) => Value::Array(
            tag,
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(i.to_string());
                    let item = expand_value(item, path, secret_keys, lookup, errors);
                    path.pop();
                    item
                })
                .collect(),
        ),
        other => other,
    }
}

/// Names the layer that set `key` (the longest prefix of it that any layer set).
fn origin(figment: &Figment, key: &str) -> Option<String> {
    let mut parts: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    while !parts.is_empty() {
        let joined = parts.join(".");
        if figment.contains(&joined) {
            let metadata = figment.find_metadata(&joined)?;
            return Some(describe(metadata, &parts));
        }
        parts.pop();
    }
    None
}

fn describe(metadata: &Metadata, keys: &[&str]) -> String {
    match metadata
        .source
        .as_ref()
        .and_then(|source| source.file_path())
    {
        Some(path) => format!("file {}", path.display()),
        None => format!(
            "{} {}",
            metadata.name,
            metadata.interpolate(&Profile::Default, keys)
        ),
    }
}

fn key_errors(err: figment::Error, layers: &Figment) -> Error {
    use figment::error::Kind;
    let mut out = Vec::new();
    for error in err {
        let mut key = error.path.clone();
        let message = match &error.kind {
            Kind::UnknownField(field, expected) => {
                // figment already ends the path with the unknown field.
                if key.last() != Some(field) {
                    key.push(field.clone());
                }
                format!("unknown key; expected one of {}", quoted(expected))
            }
            Kind::MissingField(field) => {
                key.push(field.to_string());
                "required key is missing".to_owned()
            }
            // Found values are described by type only: a `${VAR}` may have put a secret there.
            Kind::UnknownVariant(_, expected) => {
                format!("unknown value; expected one of {}", quoted(expected))
            }
            Kind::InvalidType(actual, expected) => {
                format!("expected {expected}, found {}", describe_actual(actual))
            }
            Kind::InvalidValue(actual, expected) => {
                format!("invalid {}; expected {expected}", describe_actual(actual))
            }
            other => other.to_string(),
        };
        let key = key.join(".");
        // Errors from the layer merge itself (bad YAML) carry their provider's metadata.
        let origin = origin(layers, &key).or_else(|| {
            error
                .metadata
                .as_ref()
                .map(|m| describe(m, &[]).trim_end().to_owned())
        });
        out.push(KeyError {
            key,
            origin,
            message,
        });
    }
    Error::Keys(out)
}

fn describe_actual(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(_) => "a string".to_owned(),
        Actual::Char(_) => "a character".to_owned(),
        Actual::Bytes(_) => "bytes".to_owned(),
        Actual::Other(_) => "a value of another kind".to_owned(),
        other => other.to_string(),
    }
}

fn quoted(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        enabled: bool,
        #[serde(default)]
        nested: Nested,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[serde(default)]
        url: String,
        #[serde(default)]
        api_key: Option<String>,
        #[serde(default)]
        mode: Mode,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Controller,
        Node,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        bucket: String,
    }

    impl Schema for Config {
        const ENV_PREFIX: &'static str = "APP_";
        const SECRET_REFERENCE_KEYS: &'static [&'static str] = &["nested.api_key"];
        fn validate(&self) -> Vec<Invalid> {
            if self.port == 1 {
                vec![Invalid::new("port", "port 1 is reserved")]
            } else {
                Vec::new()
            }
        }
    }

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    fn load(file: &Path, env: &[(&str, &str)]) -> Result<Config, Error> {
        Loader::new()
            .file(file)
            .env_vars(env.iter().copied())
            .load()
    }

    #[test]
    fn layers_merge_in_order() {
        let file = yaml("name: from-file\nport: 1000\nnested: { url: a }\n");
        let cfg: Config = Loader::new()
            .file(file.path())
            .env_vars([
                ("APP_PORT", "2000"),
                ("APP_NESTED__URL", "b"),
                ("OTHER", "x"),
            ])
            .flag("nested.url", "--url", "c")
            .load()
            .unwrap();
        assert_eq!(cfg.name, "from-file");
        assert_eq!(cfg.port, 2000);
        assert_eq!(cfg.nested.url, "c");
    }

    #[test]
    fn env_values_parse_as_scalars() {
        let file = yaml("name: n\n");
        let cfg = load(
            file.path(),
            &[("APP_ENABLED", "true"), ("APP_NESTED__MODE", "node")],
        )
        .unwrap();
        assert!(cfg.enabled);
        assert_eq!(cfg.nested.mode, Mode::Node);
    }

    #[test]
    fn unknown_key_names_full_path_and_file() {
        let file = yaml("name: n\nnested:\n  urll: x\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("config key `nested.urll` (from file "),
            "{err}"
        );
        assert!(
            err.contains("unknown key; expected one of `url`, `api_key`, `mode`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_in_list_names_index() {
        let file = yaml("name: n\nitems:\n  - bucket: a\n  - bucket: b\n    buckett: c\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `items.1.buckett`"), "{err}");
    }

    #[test]
    fn unknown_env_key_names_the_variable() {
        let file = yaml("name: n\n");
        let err = load(file.path(), &[("APP_NESTED__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config key `nested.nope` (from environment variable APP_NESTED__NOPE): unknown key; \
             expected one of `url`, `api_key`, `mode`"
        );
    }

    #[test]
    fn the_variable_naming_the_config_file_is_no_key() {
        let file = yaml("name: n\n");
        let cfg = load(file.path(), &[("APP_CONFIG", "/etc/app.yaml")]).unwrap();
        assert_eq!(cfg.name, "n");
    }

    #[test]
    fn bad_value_names_key_and_expectation() {
        let file = yaml("name: n\nport: many\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `port` (from file "), "{err}");
        assert!(err.ends_with("expected u16, found a string"), "{err}");
        assert!(
            !err.contains("many"),
            "found values are never echoed: {err}"
        );
        let file = yaml("name: n\nnested: { mode: both }\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(
            err.contains("`nested.mode`") && err.contains("`controller`, `node`"),
            "{err}"
        );
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let file = yaml("name: n\n");
        let err = Loader::new()
            .file(file.path())
            .env_vars([])
            .flag("port", "--port", "abc")
            .load::<Config>()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key `port` (from command-line flag --port)"),
            "{err}"
        );
    }

    #[test]
    fn missing_required_key_is_named() {
        let file = yaml("port: 5\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `name`"), "{err}");
        assert!(err.contains("required key is missing"), "{err}");
    }

    #[test]
    fn expands_variables_but_not_secret_references() {
        let file =
            yaml("name: ${NAME}-x\nnested: { url: 'wss://${HOST}/api', api_key: '${KEY}' }\n");
        let cfg = load(
            file.path(),
            &[("NAME", "n"), ("HOST", "nas"), ("KEY", "secret")],
        )
        .unwrap();
        assert_eq!(cfg.name, "n-x");
        assert_eq!(cfg.nested.url, "wss://nas/api");
        assert_eq!(cfg.nested.api_key.as_deref(), Some("${KEY}"));
    }

    #[test]
    fn unset_variable_names_key_and_variable() {
        let file = yaml("name: ${NOPE}\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(err.starts_with("config key `name` (from file "), "{err}");
        assert!(
            err.ends_with("environment variable `NOPE` is not set"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_and_bad_yaml_are_clear() {
        let err = load(Path::new("/nonexistent.yaml"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "cannot read config file `/nonexistent.yaml`");
        let file = yaml("name: [unclosed\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn empty_file_means_defaults() {
        let file = yaml("# nothing here\n");
        let cfg = Loader::new()
            .file(file.path())
            .env_vars([("APP_NAME", "x")])
            .load::<Config>();
        assert_eq!(cfg.unwrap().name, "x");
    }

    #[test]
    fn validation_errors_name_the_key() {
        let file = yaml("name: n\nport: 1\n");
        let err = load(file.path(), &[]).unwrap_err().to_string();
        assert_eq!(err, "config key `port`: port 1 is reserved");
    }
}
