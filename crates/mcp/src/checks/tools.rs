//! `tool-definitions`: the tools a `tools/list` answer offers, against the MCP schema (a tool
//! has a `name`, its `inputSchema` and any `outputSchema` are JSON Schema objects with
//! `"type": "object"`) and the spec's naming rules. A schema a strict client's validation
//! rejects (the TypeScript SDK checks the whole answer) loses every tool of the answer, not
//! only the faulty one.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::jsonrpc::Message;
use crate::session::Session;

const TOOL_DEFINITIONS: &str = "tool-definitions";
const SPEC_TOOL_DEFINITIONS: &str =
    "MCP 2025-11-25 Server/Tools §Tool (inputSchema MUST be a JSON Schema object), §Tool Names; schema.ts Tool (type: \"object\")";

/// The spec's tool names: 1 to 128 of these characters (MCP 2025-11-25 Server/Tools §Tool
/// Names, SHOULD).
const NAME_MAX: usize = 128;

pub fn checks() -> Vec<Check> {
    vec![Check {
        id: TOOL_DEFINITIONS,
        spec: SPEC_TOOL_DEFINITIONS,
        run: tool_definitions,
    }]
}

fn name_ok(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What is wrong with a schema that must be an object schema, if anything.
fn object_schema_problem(schema: &Value) -> Option<String> {
    match schema {
        Value::Object(o) => match o.get("type") {
            Some(Value::String(t)) if t == "object" => None,
            Some(other) => Some(format!("has \"type\": {other}, not \"object\"")),
            None => Some("has no \"type\": \"object\"".into()),
        },
        other => Some(format!("is {other}, not a JSON Schema object")),
    }
}

fn tool_definitions(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    // One answer's worth of findings per distinct list (a client lists again and again).
    let mut seen: Vec<String> = Vec::new();
    for call in session.calls.iter().filter(|c| c.method == "tools/list") {
        let Some((ex, _, Message::Result { result, .. })) = &call.answer else {
            continue;
        };
        let key = result
            .get("tools")
            .map(Value::to_string)
            .unwrap_or_default();
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            out.push(finding(
                TOOL_DEFINITIONS,
                SPEC_TOOL_DEFINITIONS,
                Severity::Error,
                Some(*ex),
                "The tools/list answer has no \"tools\" array: a client gets no tools at all.",
                vec![format!(
                    "result: {}",
                    crate::session::snippet(&result.to_string())
                )],
            ));
            continue;
        };
        let mut rejected: Vec<String> = Vec::new();
        let mut named: Vec<String> = Vec::new();
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, tool) in tools.iter().enumerate() {
            let name = tool.get("name").and_then(Value::as_str);
            let which = name.map_or_else(|| format!("tool #{}", i + 1), |n| format!("tool {n:?}"));
            match name {
                None => rejected.push(format!("{which} has no string \"name\"")),
                Some(n) => {
                    *names.entry(n).or_default() += 1;
                    if !name_ok(n) {
                        named.push(format!(
                            "{which}: names are 1 to {NAME_MAX} of A-Z a-z 0-9 _ - ."
                        ));
                    }
                }
            }
            match tool.get("inputSchema") {
                None => rejected.push(format!("{which} has no inputSchema")),
                Some(schema) => {
                    if let Some(problem) = object_schema_problem(schema) {
                        rejected.push(format!("{which}'s inputSchema {problem}"));
                    }
                }
            }
            if let Some(problem) = tool.get("outputSchema").and_then(object_schema_problem) {
                rejected.push(format!("{which}'s outputSchema {problem}"));
            }
        }
        for (name, n) in names.iter().filter(|(_, n)| **n > 1) {
            named.push(format!(
                "tool {name:?} is listed {n} times (names are unique within a server)"
            ));
        }
        if !rejected.is_empty() {
            out.push(finding(
                TOOL_DEFINITIONS,
                SPEC_TOOL_DEFINITIONS,
                Severity::Error,
                Some(*ex),
                format!(
                    "The tools/list answer breaks the MCP schema: {}. A client that validates \
                     the answer (the TypeScript SDK does) rejects all {} tools, not only the faulty ones.",
                    rejected.join("; "),
                    tools.len()
                ),
                rejected.iter().take(10).cloned().collect(),
            ));
        }
        if !named.is_empty() {
            out.push(finding(
                TOOL_DEFINITIONS,
                SPEC_TOOL_DEFINITIONS,
                Severity::Warning,
                Some(*ex),
                format!(
                    "Tool names outside the spec's rules: {}. Clients may drop or rename such \
                     tools.",
                    named.join("; ")
                ),
                named.iter().take(10).cloned().collect(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn listed(tools: &str) -> Cap {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "tools/list")).json(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":{tools}}}}}"#
        )));
        cap
    }

    #[test]
    fn a_schema_without_type_object_loses_every_tool_and_is_named() {
        let cap = listed(
            r#"[{"name":"echo","inputSchema":{"type":"object"}},{"name":"add","inputSchema":{"properties":{"a":{"type":"number"}}}}]"#,
        );
        let f = one(
            &cap.run(tool_definitions),
            TOOL_DEFINITIONS,
            Severity::Error,
            Some(1),
        );
        assert!(
            f.message
                .contains("tool \"add\"'s inputSchema has no \"type\": \"object\""),
            "{f:#?}"
        );
        assert!(f.message.contains("all 2 tools"), "{f:#?}");
    }

    #[test]
    fn names_outside_the_rules_are_a_warning_and_good_tools_are_quiet() {
        let cap = listed(
            r#"[{"name":"get weather","inputSchema":{"type":"object"}},{"name":"admin.tools.list","inputSchema":{"type":"object","additionalProperties":false}}]"#,
        );
        let f = one(
            &cap.run(tool_definitions),
            TOOL_DEFINITIONS,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("\"get weather\""), "{f:#?}");
        quiet(
            &listed(r#"[{"name":"DATA_EXPORT_v2","inputSchema":{"type":"object"}}]"#)
                .run(tool_definitions),
        );
    }
}
