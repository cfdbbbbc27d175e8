//! Strict input validation the way pydantic strict mode reports it (spec §7.8): UPPERCASE
//! enums, JSON ints only, unknown keys rejected, strings capped at 1024 characters.

use serde_json::{Map, Value};

use crate::rpc::{Entry, Failure};

/// The API-wide string cap.
const MAX_STR: usize = 1024;

/// A value type.
#[derive(Debug, Clone)]
pub(crate) enum Ty {
    /// Any JSON.
    Any,
    /// A string.
    Str,
    /// An integer (never a bool, string or float).
    Int,
    /// A boolean.
    Bool,
    /// One of these strings.
    Lit(&'static [&'static str]),
    /// An integer or one of these strings (`"INHERIT"`).
    IntOr(&'static [&'static str]),
    /// This type or null.
    Null(Box<Ty>),
    /// A list of this type.
    List(Box<Ty>),
    /// A dict with string keys.
    Dict(Box<Ty>),
    /// An object with these fields; unknown keys are refused.
    Obj(Vec<Field>),
    /// The first branch that fits; errors name each branch.
    Union(Vec<(&'static str, Ty)>),
}

/// A field of an object.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    name: &'static str,
    ty: Ty,
    required: bool,
}

/// A required field.
pub(crate) fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}

/// An optional field.
pub(crate) fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

/// Nullable.
pub(crate) fn null(ty: Ty) -> Ty {
    Ty::Null(Box::new(ty))
}

/// List.
pub(crate) fn list(ty: Ty) -> Ty {
    Ty::List(Box::new(ty))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn literal_message(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    match quoted.len() {
        0 => "Input should be nothing".into(),
        1 => format!("Input should be {}", quoted[0]),
        n => format!(
            "Input should be {} or {}",
            quoted[..n - 1].join(", "),
            quoted[n - 1]
        ),
    }
}

/// Checks `value` against `ty`, appending errors under `path`.
pub(crate) fn check(value: &Value, ty: &Ty, path: &str, errors: &mut Vec<Entry>) {
    let mut fail = |message: String| errors.push(Entry::invalid(path, message));
    match ty {
        Ty::Any => {}
        Ty::Str => match value {
            Value::String(s) if s.chars().count() > MAX_STR => {
                fail(format!("String should have at most {MAX_STR} characters"))
            }
            Value::String(_) => {}
            _ => fail("Input should be a valid string".into()),
        },
        Ty::Int => {
            if !(value.is_i64() || value.is_u64()) {
                fail("Input should be a valid integer".into());
            }
        }
        Ty::Bool => {
            if !value.is_boolean() {
                fail("Input should be a valid boolean".into());
            }
        }
        Ty::Lit(options) => {
            if !value.as_str().is_some_and(|s| options.contains(&s)) {
                fail(literal_message(options));
            }
        }
        Ty::IntOr(options) => {
            let ok = value.is_i64()
                || value.is_u64()
                || value.as_str().is_some_and(|s| options.contains(&s));
            if !ok {
                fail(format!(
                    "Input should be a valid integer or {}",
                    literal_message(options).trim_start_matches("Input should be ")
                ));
            }
        }
        Ty::Null(inner) => {
            if !value.is_null() {
                check(value, inner, path, errors);
            }
        }
        Ty::List(inner) => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(item, inner, &join(path, &i.to_string()), errors);
                }
            }
            _ => fail("Input should be a valid list".into()),
        },
        Ty::Dict(inner) => match value {
            Value::Object(map) => {
                for (key, item) in map {
                    check(item, inner, &join(path, key), errors);
                }
            }
            _ => fail("Input should be a valid dictionary".into()),
        },
        Ty::Obj(fields) => check_object(value, fields, path, errors),
        Ty::Union(branches) => {
            let mut all = Vec::new();
            for (name, branch) in branches {
                let mut branch_errors = Vec::new();
                check(value, branch, &join(path, name), &mut branch_errors);
                if branch_errors.is_empty() {
                    return;
                }
                all.extend(branch_errors);
            }
            errors.extend(all);
        }
    }
}

fn check_object(value: &Value, fields: &[Field], path: &str, errors: &mut Vec<Entry>) {
    let Value::Object(map) = value else {
        errors.push(Entry::invalid(path, "Input should be a valid dictionary"));
        return;
    };
    for field in fields {
        match map.get(field.name) {
            Some(item) => check(item, &field.ty, &join(path, field.name), errors),
            None if field.required => {
                errors.push(Entry::invalid(join(path, field.name), "Field required"))
            }
            None => {}
        }
    }
    for key in map.keys() {
        if !fields.iter().any(|f| f.name == key) {
            errors.push(Entry::invalid(
                join(path, key),
                "Extra inputs are not permitted",
            ));
        }
    }
}

/// Checks positional `params` against named arguments; returns them padded with nulls.
pub(crate) fn args(params: &[Value], spec: &[Field]) -> Result<Vec<Value>, Failure> {
    if params.len() > spec.len() {
        return Err(Failure::invalid(
            "",
            format!(
                "Too many arguments (expected {}, found {})",
                spec.len(),
                params.len()
            ),
        ));
    }
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(spec.len());
    for (i, field) in spec.iter().enumerate() {
        match params.get(i) {
            Some(value) => {
                check(value, &field.ty, field.name, &mut errors);
                out.push(value.clone());
            }
            None if field.required => errors.push(Entry::invalid(field.name, "Field required")),
            None => out.push(Value::Null),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Failure::Validation(errors))
    }
}

/// A field of an object argument, or `None`.
pub(crate) fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| !v.is_null())
}

/// A string field, or `default`.
pub(crate) fn str_or<'a>(value: &'a Value, key: &str, default: &'a str) -> &'a str {
    get(value, key).and_then(Value::as_str).unwrap_or(default)
}

/// A bool field, or `default`.
pub(crate) fn bool_or(value: &Value, key: &str, default: bool) -> bool {
    get(value, key).and_then(Value::as_bool).unwrap_or(default)
}

/// An empty object when the argument was left out.
pub(crate) fn object_or_empty(value: &Value) -> Value {
    if value.is_null() {
        Value::Object(Map::new())
    } else {
        value.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strict_types_and_extra_keys() {
        let ty = Ty::Obj(vec![
            req("name", Ty::Str),
            opt("volsize", Ty::Int),
            opt("sparse", Ty::Bool),
            opt("sync", Ty::Lit(&["STANDARD", "ALWAYS"])),
        ]);
        let mut errors = Vec::new();
        check(
            &json!({"volsize": "10", "sparse": 1, "sync": "standard", "bogus": 1}),
            &ty,
            "data",
            &mut errors,
        );
        let got: Vec<(String, String)> = errors
            .into_iter()
            .map(|e| (e.attribute.unwrap(), e.message))
            .collect();
        assert_eq!(
            got,
            vec![
                ("data.name".into(), "Field required".into()),
                (
                    "data.volsize".into(),
                    "Input should be a valid integer".into()
                ),
                (
                    "data.sparse".into(),
                    "Input should be a valid boolean".into()
                ),
                (
                    "data.sync".into(),
                    "Input should be 'STANDARD' or 'ALWAYS'".into()
                ),
                ("data.bogus".into(), "Extra inputs are not permitted".into()),
            ]
        );
    }

    #[test]
    fn too_many_arguments() {
        let err = args(&[json!(1), json!(2)], &[req("id", Ty::Int)]).unwrap_err();
        assert_eq!(
            err,
            Failure::invalid("", "Too many arguments (expected 1, found 2)")
        );
    }
}
