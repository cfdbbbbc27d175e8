//! Typed query filters and options (spec §3), so call sites never hand-build filter JSON.

use serde_json::{Map, Value, json};

/// Comparison operators of TrueNAS filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `=`: equal, no type coercion.
    Eq,
    /// `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `in`: the field's value is in the given list.
    In,
    /// `nin`: the field's value is not in the given list.
    NotIn,
    /// `rin`: the given value is in the field (a list or string).
    Contains,
    /// `^`: the field starts with the given string.
    StartsWith,
    /// `$`: the field ends with the given string.
    EndsWith,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::In => "in",
            Self::NotIn => "nin",
            Self::Contains => "rin",
            Self::StartsWith => "^",
            Self::EndsWith => "$",
        }
    }
}

/// One filter condition, or an OR of AND-groups.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `[field, op, value]`.
    Cond {
        /// Dotted path, already escaped (see [`field`]).
        field: String,
        /// The comparison.
        op: Op,
        /// The value compared with.
        value: Value,
    },
    /// `["OR", [branch, …]]`; each branch is a list of conditions ANDed together.
    Or(Vec<Vec<Filter>>),
}

/// Joins path segments into a filter field, escaping literal dots inside a segment.
pub fn field(segments: &[&str]) -> String {
    let escaped: Vec<String> = segments.iter().map(|s| s.replace('.', "\\.")).collect();
    escaped.join(".")
}

impl Filter {
    /// `field = value`: the exact match every lookup of ours uses (never a prefix match).
    pub fn eq(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Cond {
            field: field.into(),
            op: Op::Eq,
            value: value.into(),
        }
    }

    /// `field <op> value`.
    pub fn cond(field: impl Into<String>, op: Op, value: impl Into<Value>) -> Self {
        Self::Cond {
            field: field.into(),
            op,
            value: value.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Cond { field, op, value } => json!([field, op.symbol(), value]),
            Self::Or(branches) => {
                let branches: Vec<Value> = branches
                    .iter()
                    .map(|branch| match branch.as_slice() {
                        [single] => single.to_json(),
                        many => Value::Array(many.iter().map(Filter::to_json).collect()),
                    })
                    .collect();
                json!(["OR", branches])
            }
        }
    }
}

/// Filters plus options: the two positional params of every `*.query` method.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    filters: Vec<Filter>,
    select: Vec<String>,
    order_by: Vec<String>,
    limit: Option<u32>,
    offset: Option<u32>,
    count: bool,
    get: bool,
    extra: Map<String, Value>,
}

impl Query {
    /// Everything, unfiltered.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a condition (conditions are ANDed).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Returns only these fields; keeps replies small (spec §7.2).
    pub fn select(mut self, fields: &[&str]) -> Self {
        self.select.extend(fields.iter().map(|f| (*f).to_owned()));
        self
    }

    /// Sorts by a field; `descending` puts the largest first.
    pub fn order_by(mut self, field: &str, descending: bool) -> Self {
        self.order_by.push(if descending {
            format!("-{field}")
        } else {
            field.to_owned()
        });
        self
    }

    /// Pages: at most `limit` rows after skipping `offset`.
    pub fn page(mut self, offset: u32, limit: u32) -> Self {
        self.offset = Some(offset);
        self.limit = Some(limit);
        self
    }

    /// Asks for the number of matches instead of rows.
    pub fn count(mut self) -> Self {
        self.count = true;
        self
    }

    /// Asks for the first match as an object; no match is a NotFound error.
    pub fn get(mut self) -> Self {
        self.get = true;
        self
    }

    /// Sets a per-method `extra` option, e.g. `retrieve_children: false`.
    pub fn extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The `[filters, options]` params, with options left out when all are defaults.
    pub fn params(&self) -> Vec<Value> {
        let filters = Value::Array(self.filters.iter().map(Filter::to_json).collect());
        let mut options = Map::new();
        if !self.select.is_empty() {
            options.insert("select".into(), json!(self.select));
        }
        if !self.order_by.is_empty() {
            options.insert("order_by".into(), json!(self.order_by));
        }
        if let Some(limit) = self.limit {
            options.insert("limit".into(), json!(limit));
        }
        if let Some(offset) = self.offset {
            options.insert("offset".into(), json!(offset));
        }
        if self.count {
            options.insert("count".into(), json!(true));
        }
        if self.get {
            options.insert("get".into(), json!(true));
        }
        if !self.extra.is_empty() {
            options.insert("extra".into(), Value::Object(self.extra.clone()));
        }
        if options.is_empty() {
            vec![filters]
        } else {
            vec![filters, Value::Object(options)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_lookup_with_select_and_extra() {
        let query = Query::all()
            .filter(Filter::eq("id", "tank/k8s/pvc-1"))
            .select(&["id", "user_properties"])
            .extra("retrieve_children", false)
            .extra("properties", json!([]));
        assert_eq!(
            Value::Array(query.params()),
            json!([[["id", "=", "tank/k8s/pvc-1"]], {"select": ["id", "user_properties"], "extra": {"retrieve_children": false, "properties": []}}])
        );
    }

    #[test]
    fn or_groups_and_operators() {
        let query = Query::all().filter(Filter::Or(vec![
            vec![Filter::eq("name", "a")],
            vec![
                Filter::cond("pool", Op::In, json!(["tank", "ssd"])),
                Filter::cond("name", Op::StartsWith, "csi/"),
            ],
        ]));
        assert_eq!(
            Value::Array(query.params()),
            json!([[[
                "OR",
                [
                    ["name", "=", "a"],
                    [["pool", "in", ["tank", "ssd"]], ["name", "^", "csi/"]]
                ]
            ]]])
        );
    }

    #[test]
    fn pagination_count_get_and_defaults() {
        assert_eq!(Query::all().params(), vec![json!([])]);
        let page = Query::all().order_by("id", false).page(100, 50);
        assert_eq!(
            page.params()[1],
            json!({"order_by": ["id"], "limit": 50, "offset": 100})
        );
        assert_eq!(Query::all().count().params()[1], json!({"count": true}));
        assert_eq!(
            Query::all().get().order_by("created", true).params()[1],
            json!({"order_by": ["-created"], "get": true})
        );
    }

    #[test]
    fn fields_escape_literal_dots() {
        assert_eq!(
            field(&["user_properties", "tns-csi:managed_by", "value"]),
            "user_properties.tns-csi:managed_by.value"
        );
        assert_eq!(
            field(&["properties", "org.example.key"]),
            "properties.org\\.example\\.key"
        );
    }
}
