//! Query filters and options evaluated the way middlewared's `filter_list` does (spec §3).

use std::cmp::Ordering;

use serde_json::{Map, Value, json};

use crate::rpc::{Entry, Failure};

const OPS: &[&str] = &[
    "=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$",
];

/// Parsed `[filters, options]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryArgs {
    filters: Vec<Value>,
    /// The options object.
    pub(crate) options: Map<String, Value>,
}

impl QueryArgs {
    /// Validates and parses the two positional query params.
    pub(crate) fn parse(params: &[Value]) -> Result<Self, Failure> {
        if params.len() > 2 {
            return Err(Failure::invalid(
                "",
                format!("Too many arguments (expected 2, found {})", params.len()),
            ));
        }
        let filters = match params.first() {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(filters)) => filters.clone(),
            Some(_) => return Err(Failure::invalid("filters", "Input should be a valid list")),
        };
        for filter in &filters {
            check_filter(filter, 1)?;
        }
        let options = match params.get(1) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(options)) => options.clone(),
            Some(_) => {
                return Err(Failure::invalid(
                    "options",
                    "Input should be a valid dictionary",
                ));
            }
        };
        const KEYS: &[&str] = &[
            "select",
            "order_by",
            "limit",
            "offset",
            "count",
            "get",
            "extra",
            "force_sql_filters",
        ];
        let mut errors = Vec::new();
        for key in options.keys() {
            if !KEYS.contains(&key.as_str()) {
                errors.push(Entry::invalid(
                    format!("options.{key}"),
                    "Extra inputs are not permitted",
                ));
            }
        }
        for key in ["limit", "offset"] {
            if let Some(v) = options.get(key)
                && !v.is_u64()
            {
                errors.push(Entry::invalid(
                    format!("options.{key}"),
                    "Input should be a valid integer",
                ));
            }
        }
        for key in ["count", "get", "force_sql_filters"] {
            if let Some(v) = options.get(key)
                && !v.is_boolean()
            {
                errors.push(Entry::invalid(
                    format!("options.{key}"),
                    "Input should be a valid boolean",
                ));
            }
        }
        if !errors.is_empty() {
            return Err(Failure::Validation(errors));
        }
        let args = Self { filters, options };
        if args.flag("get") && (args.number("limit") > 1 || args.number("offset") > 0) {
            return Err(Failure::invalid(
                "options",
                "Invalid options combination. `get` implies a single result.",
            ));
        }
        Ok(args)
    }

    fn flag(&self, key: &str) -> bool {
        self.options
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn number(&self, key: &str) -> u64 {
        self.options.get(key).and_then(Value::as_u64).unwrap_or(0)
    }

    /// A key of `options.extra`, or null.
    pub(crate) fn extra(&self, key: &str) -> Option<&Value> {
        self.options.get("extra").and_then(|extra| extra.get(key))
    }

    /// The only filter, when it is `[field, "=", value]` (the snapshot fast path).
    pub(crate) fn only_equality(&self, field: &str) -> Option<&Value> {
        match self.filters.as_slice() {
            [Value::Array(f)] if f.len() == 3 && f[0] == field && f[1] == "=" => Some(&f[2]),
            _ => None,
        }
    }

    /// The only filter, when it is `[field, "in", [values]]` (lookups of a few by name).
    pub(crate) fn only_membership(&self, field: &str) -> Option<&Vec<Value>> {
        match self.filters.as_slice() {
            [Value::Array(f)] if f.len() == 3 && f[0] == field && f[1] == "in" => f[2].as_array(),
            _ => None,
        }
    }

    /// Whether the rows come back in stored name order (no `order_by`, or by `id`/`name`
    /// ascending), so offset and limit can be applied before anything is rendered.
    pub(crate) fn in_name_order(&self) -> bool {
        match self.options.get("order_by") {
            None => true,
            Some(Value::Array(order)) => {
                order.is_empty()
                    || (order.len() == 1 && matches!(order[0].as_str(), Some("id" | "name")))
            }
            Some(_) => false,
        }
    }

    /// Whether only the number of matches is asked for.
    pub(crate) fn counting(&self) -> bool {
        self.flag("count")
    }

    /// `offset` and `limit` (0: no limit).
    pub(crate) fn page(&self) -> (usize, usize) {
        (
            self.number("offset") as usize,
            self.number("limit") as usize,
        )
    }

    /// The same query without `offset` and `limit` (already applied by the caller).
    pub(crate) fn without_paging(&self) -> Self {
        let mut copy = self.clone();
        copy.options.remove("offset");
        copy.options.remove("limit");
        copy
    }

    /// The filters, as sent.
    pub(crate) fn filters(&self) -> &[Value] {
        &self.filters
    }

    /// Whether a stored row can still match, judged only by the filters on its own fields
    /// (`aliases` maps a rendered path such as `subsys.id` to the stored field `subsys_id`):
    /// rows that cannot match are never rendered, so a lookup by name or parent costs one
    /// rendered row, not one per row in the table.
    pub(crate) fn may_match(&self, raw: &Value, aliases: &[(&str, &str)]) -> bool {
        self.filters.iter().all(|filter| {
            let Value::Array(parts) = filter else {
                return true;
            };
            let [Value::String(field), op, value] = parts.as_slice() else {
                return true;
            };
            let stored = aliases
                .iter()
                .find(|(path, _)| path == field)
                .map_or(field.as_str(), |(_, stored)| stored);
            if stored.contains('.') || raw.get(stored).is_none() {
                return true;
            }
            matches(raw, &json!([stored, op, value]))
        })
    }

    /// [`QueryArgs::apply`] over borrowed rows: only the rows that pass the filters are
    /// cloned.
    pub(crate) fn apply_refs(&self, rows: Vec<&Value>) -> Result<Value, Failure> {
        let matching = rows
            .into_iter()
            .filter(|row| self.filters.iter().all(|f| matches(row, f)))
            .cloned()
            .collect();
        self.apply(matching)
    }

    /// Filters, orders, pages, projects: the reply of a `*.query`.
    pub(crate) fn apply(&self, rows: Vec<Value>) -> Result<Value, Failure> {
        let mut rows: Vec<Value> = rows
            .into_iter()
            .filter(|row| self.filters.iter().all(|f| matches(row, f)))
            .collect();
        if self.flag("count") {
            return Ok(json!(rows.len()));
        }
        if let Some(Value::Array(order)) = self.options.get("order_by") {
            for key in order.iter().rev().filter_map(Value::as_str) {
                let key = key
                    .trim_start_matches("nulls_first:")
                    .trim_start_matches("nulls_last:");
                let (key, descending) = match key.strip_prefix('-') {
                    Some(key) => (key, true),
                    None => (key, false),
                };
                rows.sort_by(|a, b| {
                    let ord = compare(
                        lookup(a, key).unwrap_or(&Value::Null),
                        lookup(b, key).unwrap_or(&Value::Null),
                    );
                    if descending { ord.reverse() } else { ord }
                });
            }
        }
        let offset = self.number("offset") as usize;
        let limit = self.number("limit") as usize;
        let rows: Vec<Value> = rows
            .into_iter()
            .skip(offset)
            .take(if limit == 0 { usize::MAX } else { limit })
            .map(|row| self.project(row))
            .collect();
        if self.flag("get") {
            return rows.into_iter().next().ok_or_else(Failure::match_not_found);
        }
        Ok(Value::Array(rows))
    }

    fn project(&self, row: Value) -> Value {
        let Some(Value::Array(select)) = self.options.get("select") else {
            return row;
        };
        if select.is_empty() {
            return row;
        }
        let mut out = Map::new();
        for item in select {
            let (path, alias) = match item {
                Value::String(path) => (path.as_str(), None),
                Value::Array(pair) if pair.len() == 2 => {
                    (pair[0].as_str().unwrap_or(""), pair[1].as_str())
                }
                _ => continue,
            };
            let Some(value) = lookup(&row, path) else {
                continue;
            };
            match alias {
                Some(alias) => {
                    out.insert(alias.to_owned(), value.clone());
                }
                None => insert_nested(&mut out, &split(path), value.clone()),
            }
        }
        Value::Object(out)
    }
}

fn insert_nested(out: &mut Map<String, Value>, segments: &[String], value: Value) {
    match segments {
        [] => {}
        [last] => {
            out.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let child = out
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = child {
                insert_nested(child, rest, value);
            }
        }
    }
}

fn check_filter(filter: &Value, depth: usize) -> Result<(), Failure> {
    let bad = |message: String| Failure::invalid("filters", format!("Value error, {message}"));
    let Value::Array(parts) = filter else {
        return Err(bad(format!("Invalid filter {filter}")));
    };
    if parts.len() == 2 && parts[0] == "OR" {
        if depth > 3 {
            return Err(bad("Query filters nested too deeply".into()));
        }
        let Value::Array(branches) = &parts[1] else {
            return Err(bad("OR requires a list of filters".into()));
        };
        if branches.is_empty() {
            return Err(bad("OR requires at least one filter".into()));
        }
        for branch in branches {
            match branch {
                Value::Array(inner) if inner.first().is_some_and(Value::is_array) => {
                    for f in inner {
                        check_filter(f, depth + 1)?;
                    }
                }
                other => check_filter(other, depth + 1)?,
            }
        }
        return Ok(());
    }
    if parts.len() != 3 || !parts[0].is_string() {
        return Err(bad(format!("Invalid filter {filter}")));
    }
    let op = parts[1].as_str().unwrap_or("");
    let base = op.strip_prefix('C').filter(|b| *b != "~").unwrap_or(op);
    if !OPS.contains(&base) {
        return Err(bad(format!("Invalid operation: {op}")));
    }
    Ok(())
}

/// Splits a dotted path, honouring `\.` escapes.
fn split(path: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                chars.next();
                out.last_mut().expect("non-empty").push('.');
            }
            '.' => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

/// The value at a dotted path, if every segment exists.
pub(crate) fn lookup<'a>(row: &'a Value, path: &str) -> Option<&'a Value> {
    // A plain field (the common case, once per row of a scan): no splitting, no allocation.
    if !path.contains(['.', '\\']) {
        return match row {
            Value::Object(map) => map.get(path),
            Value::Array(items) => items.get(path.parse::<usize>().ok()?),
            _ => None,
        };
    }
    let mut current = row;
    for segment in split(path) {
        current = match current {
            Value::Object(map) => map.get(&segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn matches(row: &Value, filter: &Value) -> bool {
    let Value::Array(parts) = filter else {
        return false;
    };
    if parts.len() == 2 && parts[0] == "OR" {
        let Value::Array(branches) = &parts[1] else {
            return false;
        };
        return branches.iter().any(|branch| match branch {
            Value::Array(inner) if inner.first().is_some_and(Value::is_array) => {
                inner.iter().all(|f| matches(row, f))
            }
            other => matches(row, other),
        });
    }
    let (Some(path), Some(op)) = (parts[0].as_str(), parts[1].as_str()) else {
        return false;
    };
    let wanted = &parts[2];
    let star = if path.contains('*') {
        let segments = split(path);
        segments
            .iter()
            .position(|s| s == "*")
            .map(|at| (segments, at))
    } else {
        None
    };
    if let Some((path_segments, star)) = star {
        let head: Vec<&str> = path_segments[..star].iter().map(String::as_str).collect();
        let tail: Vec<&str> = path_segments[star + 1..]
            .iter()
            .map(String::as_str)
            .collect();
        let Some(Value::Array(items)) = lookup(row, &head.join(".")) else {
            return false;
        };
        return items.iter().any(|item| {
            let field = if tail.is_empty() {
                Some(item)
            } else {
                lookup(item, &tail.join("."))
            };
            field.is_some_and(|x| compare_op(x, op, wanted))
        });
    }
    match lookup(row, path) {
        Some(x) => compare_op(x, op, wanted),
        None => false,
    }
}

fn lower(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.to_lowercase()),
        Value::Array(items) => Value::Array(items.iter().map(lower).collect()),
        other => other.clone(),
    }
}

fn compare_op(x: &Value, op: &str, y: &Value) -> bool {
    if let Some(base) = op.strip_prefix('C')
        && base != "~"
        && !base.is_empty()
    {
        return compare_op(&lower(x), base, &lower(y));
    }
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match op {
        "=" => x == y,
        "!=" => x != y,
        ">" => compare(x, y) == Ordering::Greater && same_kind(x, y),
        ">=" => compare(x, y) != Ordering::Less && same_kind(x, y),
        "<" => compare(x, y) == Ordering::Less && same_kind(x, y),
        "<=" => compare(x, y) != Ordering::Greater && same_kind(x, y),
        "~" => {
            let subject = text(x).unwrap_or_default();
            y.as_str()
                .is_some_and(|pattern| simple_regex_prefix(pattern, &subject))
        }
        "in" => y.as_array().is_some_and(|list| list.contains(x)),
        "nin" => y.as_array().is_some_and(|list| !list.contains(x)),
        "rin" => contains(x, y),
        "rnin" => !x.is_null() && !contains(x, y),
        "^" => matches!((text(x), text(y)), (Some(x), Some(y)) if x.starts_with(&y)),
        "!^" => matches!((text(x), text(y)), (Some(x), Some(y)) if !x.starts_with(&y)),
        "$" => matches!((text(x), text(y)), (Some(x), Some(y)) if x.ends_with(&y)),
        "!$" => matches!((text(x), text(y)), (Some(x), Some(y)) if !x.ends_with(&y)),
        _ => false,
    }
}

fn contains(x: &Value, y: &Value) -> bool {
    match x {
        Value::Array(items) => items.contains(y),
        Value::String(s) => y.as_str().is_some_and(|y| s.contains(y)),
        _ => false,
    }
}

/// `re.match` for the patterns tests use: literal text with optional trailing `.*`.
fn simple_regex_prefix(pattern: &str, subject: &str) -> bool {
    let literal = pattern.trim_end_matches(".*").replace('\\', "");
    subject.starts_with(&literal)
}

fn same_kind(x: &Value, y: &Value) -> bool {
    matches!(
        (x, y),
        (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_))
    )
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .partial_cmp(&b.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(params: Value, rows: Value) -> Result<Value, Failure> {
        let params = params.as_array().unwrap().clone();
        QueryArgs::parse(&params)?.apply(rows.as_array().unwrap().clone())
    }

    #[test]
    fn filters_options_and_escapes() {
        let rows = json!([
            {"id": 1, "name": "a", "subsys": {"id": 7}, "user_properties": {"k:a.b": {"value": "x"}}},
            {"id": 2, "name": "b", "subsys": {"id": 8}, "user_properties": {}},
            {"id": 3, "name": "c", "subsys": {"id": 7}, "user_properties": {}},
        ]);
        assert_eq!(
            run(
                json!([[["subsys.id", "=", 7]], {"select": ["id"]}]),
                rows.clone()
            )
            .unwrap(),
            json!([{"id":1},{"id":3}])
        );
        assert_eq!(
            run(
                json!([[["user_properties.k:a\\.b.value", "=", "x"]]]),
                rows.clone()
            )
            .unwrap()[0]["id"],
            1
        );
        assert_eq!(
            run(json!([[["id", "=", "1"]]]), rows.clone()).unwrap(),
            json!([])
        );
        assert_eq!(
            run(
                json!([[["OR", [["name", "=", "a"], ["name", "=", "b"]]]], {"count": true}]),
                rows.clone()
            )
            .unwrap(),
            json!(2)
        );
        assert_eq!(
            run(json!([[], {"order_by": ["-id"], "limit": 1}]), rows.clone()).unwrap()[0]["id"],
            3
        );
        assert_eq!(
            run(json!([[["name", "C=", "A"]], {"get": true}]), rows.clone()).unwrap()["id"],
            1
        );
        assert_eq!(
            run(json!([[["name", "=", "zz"]], {"get": true}]), rows.clone()).unwrap_err(),
            Failure::match_not_found()
        );
        assert!(run(json!([[["name", "==", "a"]]]), rows.clone()).is_err());
        assert!(run(json!([[], {"get": true, "limit": 2}]), rows).is_err());
    }
}
