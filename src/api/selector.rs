//! Label selectors: upstream's string syntax (`a=b,c!=d,e in (f,g),h notin (i),j,!k`) and the
//! `matchLabels`/`matchExpressions` object form, both turned into one list of requirements.

use std::fmt;

use serde_json::{Map, Value};

/// A selector parse error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_key(k: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(|l| is_label_like(l, true)))
    {
        return Err(SelectorError(format!("invalid label key {k:?}: prefix part must be a DNS-1123 subdomain")));
    }
    if name.is_empty() || name.len() > 63 || !is_name_chars(name) {
        return Err(SelectorError(format!(
            "invalid label key {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

fn is_label_like(l: &str, lower: bool) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars().all(|c| (c.is_ascii_alphanumeric() && (!lower || !c.is_ascii_uppercase())) || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn is_name_chars(s: &str) -> bool {
    let b = s.as_bytes();
    b.first().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.last().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn valid_value(v: &str) -> Result<(), SelectorError> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 || !is_name_chars(v) {
        return Err(SelectorError(format!(
            "invalid label value: {v:?}: at key: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError("unexpected ')'".into()));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError("missing ')'".into()));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_set(rest: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("found '{rest}', expected: '('")))?;
    let mut vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if vals.len() == 1 && vals[0].is_empty() {
        vals.clear();
    }
    for v in &vals {
        valid_value(v)?;
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        for part in split_top(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError("found ',', expected: identifier".into()));
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                let k = k.trim();
                valid_key(k)?;
                Requirement { key: k.into(), op: Op::DoesNotExist, values: vec![] }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement { key: k.trim().into(), op: Op::NotEquals, values: vec![v.trim().into()] }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement { key: k.trim().into(), op: Op::Equals, values: vec![v.trim().into()] }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement { key: k.trim().into(), op: Op::Equals, values: vec![v.trim().into()] }
            } else if let Some((k, v)) = part.split_once('>') {
                Requirement { key: k.trim().into(), op: Op::Gt, values: vec![v.trim().into()] }
            } else if let Some((k, v)) = part.split_once('<') {
                Requirement { key: k.trim().into(), op: Op::Lt, values: vec![v.trim().into()] }
            } else {
                let mut words = part.splitn(2, char::is_whitespace);
                let key = words.next().unwrap_or("").trim();
                let rest = words.next().unwrap_or("").trim();
                if rest.is_empty() {
                    Requirement { key: key.into(), op: Op::Exists, values: vec![] }
                } else if let Some(r) = rest.strip_prefix("notin") {
                    Requirement { key: key.into(), op: Op::NotIn, values: parse_set(r)? }
                } else if let Some(r) = rest.strip_prefix("in") {
                    Requirement { key: key.into(), op: Op::In, values: parse_set(r)? }
                } else {
                    return Err(SelectorError(format!("found '{rest}', expected: in, notin, =, ==, !=, gt, lt")));
                }
            };
            valid_key(&req.key)?;
            match req.op {
                Op::Equals | Op::NotEquals => valid_value(&req.values[0])?,
                Op::Gt | Op::Lt => {
                    req.values[0].parse::<i64>().map_err(|_| {
                        SelectorError(format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {}",
                            req.values[0]
                        ))
                    })?;
                }
                Op::In | Op::NotIn if req.values.is_empty() => {
                    return Err(SelectorError(format!(
                        "for 'in', 'notin' operators, values set can't be empty: {}",
                        req.key
                    )));
                }
                _ => {}
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    /// Builds a selector from a `metav1.LabelSelector` object.
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if v.is_null() {
            return Ok(LabelSelector { reqs });
        }
        if let Some(ml) = v.get("matchLabels").and_then(|m| m.as_object()) {
            for (k, val) in ml {
                let val = val.as_str().ok_or_else(|| SelectorError(format!("matchLabels[{k}] must be a string")))?;
                valid_key(k)?;
                valid_value(val)?;
                reqs.push(Requirement { key: k.clone(), op: Op::Equals, values: vec![val.into()] });
            }
        }
        for e in v.get("matchExpressions").and_then(|m| m.as_array()).into_iter().flatten() {
            let key = e.get("key").and_then(|k| k.as_str()).unwrap_or("").to_string();
            valid_key(&key)?;
            let values: Vec<String> = e
                .get("values")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default();
            let op = match e.get("operator").and_then(|o| o.as_str()).unwrap_or("") {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(SelectorError(format!("{other:?} is not a valid label selector operator"))),
            };
            reqs.push(Requirement { key, op, values });
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(|v| v.as_str());
            match r.op {
                Op::Equals => v == Some(r.values[0].as_str()),
                Op::NotEquals => v != Some(r.values[0].as_str()),
                Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt | Op::Lt => {
                    let (Some(have), Ok(want)) = (v.and_then(|s| s.parse::<i64>().ok()), r.values[0].parse::<i64>())
                    else {
                        return false;
                    };
                    if r.op == Op::Gt { have > want } else { have < want }
                }
            }
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .reqs
            .iter()
            .map(|r| match r.op {
                Op::Equals => format!("{}={}", r.key, r.values[0]),
                Op::NotEquals => format!("{}!={}", r.key, r.values[0]),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::Gt => format!("{}>{}", r.key, r.values[0]),
                Op::Lt => format!("{}<{}", r.key, r.values[0]),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn full_syntax() {
        let s = LabelSelector::parse("app=web,tier in (a, b),env notin (prod),track,!legacy,ver!=2").unwrap();
        assert!(s.matches(Some(&labels(json!({"app": "web", "tier": "a", "env": "dev", "track": "x", "ver": "1"})))));
        assert!(!s.matches(Some(&labels(json!({"app": "web", "tier": "c", "track": "x"})))));
        assert!(!s.matches(Some(&labels(json!({"app": "web", "tier": "a", "track": "x", "legacy": "1"})))));
        assert!(!s.matches(None));
        assert!(LabelSelector::parse("").unwrap().matches(None));
        assert_eq!(s.to_string(), "app=web,tier in (a,b),env notin (prod),track,!legacy,ver!=2");
    }

    #[test]
    fn errors() {
        assert!(LabelSelector::parse("a in (b").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("-a=b").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("a,,b").is_err());
    }

    #[test]
    fn object_form() {
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "t", "operator": "In", "values": ["x"]}]})).unwrap();
        assert_eq!(s.to_string(), "app=web,t in (x)");
        assert!(LabelSelector::from_json(&json!({"matchExpressions": [{"key": "t", "operator": "Near"}]})).is_err());
    }
}
