//! `${VAR}` expansion for config strings, with the environment behind a seam for tests.

use std::collections::HashMap;
use std::ffi::OsString;

use crate::Error;

/// Where `${VAR}` references are looked up; a seam so tests need not mutate the process env.
pub trait EnvLookup {
    /// The value of `name`, or `None` when it is unset.
    fn var_os(&self, name: &str) -> Option<OsString>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// A fixed environment for tests and for embedding.
#[derive(Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    /// Builds an environment from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl std::fmt::Debug for MapEnv {
    // Values may be secrets: show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("MapEnv").field(&names).finish()
    }
}

impl EnvLookup for MapEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.0.get(name).map(OsString::from)
    }
}

/// One piece of a parsed config string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// Splits `input` into literals and `${VAR}` references; `$$` stands for a literal `$`.
pub(crate) fn parse(input: &str) -> Result<Vec<Piece<'_>>, Error> {
    let mut pieces = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        if pos > 0 {
            pieces.push(Piece::Literal(&rest[..pos]));
        }
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            pieces.push(Piece::Literal("$"));
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| Error::BadReference {
                reason: format!("`${{` without a closing `}}` in `{input}`"),
            })?;
            let name = &body[..end];
            if !is_var_name(name) {
                return Err(Error::BadReference {
                    reason: format!(
                        "`${{{name}}}` in `{input}` is not a variable name (letters, digits, `_`)"
                    ),
                });
            }
            pieces.push(Piece::Var(name));
            rest = &body[end + 1..];
        } else {
            pieces.push(Piece::Literal("$"));
            rest = after;
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands every `${VAR}` in a non-secret config string; `$$` is a literal `$`.
///
/// Secret fields never go through here: they name their variable and are resolved by
/// [`crate::SecretSource`], so a secret never sits in a plain `String`.
pub fn expand(input: &str, env: &dyn EnvLookup) -> Result<String, Error> {
    let mut out = String::with_capacity(input.len());
    for piece in parse(input)? {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Var(name) => {
                let value = env
                    .var_os(name)
                    .ok_or_else(|| Error::EnvMissing { var: name.into() })?;
                let value = value
                    .into_string()
                    .map_err(|_| Error::EnvNotUnicode { var: name.into() })?;
                out.push_str(&value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_and_escapes() {
        let env = MapEnv::from_pairs([("HOST", "nas.lan"), ("PORT", "443")]);
        assert_eq!(
            expand("wss://${HOST}:${PORT}/api", &env).unwrap(),
            "wss://nas.lan:443/api"
        );
        assert_eq!(expand("cost $$5 and $x", &env).unwrap(), "cost $5 and $x");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        assert_eq!(expand("", &env).unwrap(), "");
        assert_eq!(expand("end$", &env).unwrap(), "end$");
    }

    #[test]
    fn missing_variable_is_named() {
        let err = expand("x${NOPE}", &MapEnv::default()).unwrap_err();
        assert_eq!(err.to_string(), "environment variable `NOPE` is not set");
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in ["${", "${A", "${}", "${1A}", "${A-B}"] {
            let err = expand(bad, &MapEnv::default()).unwrap_err();
            assert!(matches!(err, Error::BadReference { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn map_env_debug_shows_names_only() {
        let env = MapEnv::from_pairs([("TOKEN", "hunter2-value")]);
        let shown = format!("{env:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
