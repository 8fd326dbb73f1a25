//! An example for every operation of the OpenAPI document, kept in `openapi/examples.json` (the
//! answers of a real server, shortened) and merged into the document as it is built:
//!
//! - `x-codeSamples`: the request as a `curl` command (what Redoc and most API portals show);
//! - the request body's `example` for JSON bodies;
//! - an `example` for each success response's media types (an SSE stream as its text).
//!
//! `redocly lint` checks every example against its schema (`scripts/check-api-fuzz.sh`), and the
//! tests below check that no operation lacks one, so the examples cannot silently drift from the
//! API.

use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::openapi::{OpenApi, RefOr};

const EXAMPLES: &str = include_str!("../../../openapi/examples.json");

/// One operation's examples.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationExamples {
    /// The request as a shell command.
    curl: String,
    /// Media type → example body.
    #[serde(default)]
    request: BTreeMap<String, serde_json::Value>,
    /// Status → media type → example body.
    #[serde(default)]
    responses: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

fn parse() -> Result<BTreeMap<String, OperationExamples>, String> {
    serde_json::from_str(EXAMPLES).map_err(|e| format!("openapi/examples.json: {e}"))
}

/// Merges the examples into `doc`, by operationId. The file is part of the binary and checked
/// by the tests below; should it still not parse, the document goes out without examples and
/// the error is logged.
pub(super) fn add(doc: &mut OpenApi) {
    let examples = match parse() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "the OpenAPI document's examples are unreadable");
            return;
        }
    };
    for_each_operation(doc, |op| {
        let Some(ex) = op.operation_id.as_ref().and_then(|id| examples.get(id)) else {
            return;
        };
        let sample = serde_json::json!([{"lang": "Shell", "label": "curl", "source": ex.curl}]);
        let ext = utoipa::openapi::extensions::ExtensionsBuilder::new()
            .add("x-codeSamples", sample)
            .build();
        match &mut op.extensions {
            Some(existing) => existing.merge(ext),
            None => op.extensions = Some(ext),
        }
        if let Some(RefOr::T(body)) = &mut op.request_body {
            for (media, content) in body.content.iter_mut() {
                if let (RefOr::T(content), Some(v)) = (content, ex.request.get(media)) {
                    content.example = Some(v.clone());
                }
            }
        }
        for (status, response) in op.responses.responses.iter_mut() {
            let (RefOr::T(r), Some(by_media)) = (response, ex.responses.get(status)) else {
                continue;
            };
            for (media, content) in r.content.iter_mut() {
                if let (RefOr::T(content), Some(v)) = (content, by_media.get(media)) {
                    content.example = Some(v.clone());
                }
            }
        }
    });
}

/// Calls `f` on every operation of `doc`.
pub(super) fn for_each_operation(
    doc: &mut OpenApi,
    mut f: impl FnMut(&mut utoipa::openapi::path::Operation),
) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ]
        .into_iter()
        .flatten()
        {
            f(op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_file_parses_and_names_only_real_operations() {
        let examples = parse().unwrap();
        let mut doc = super::super::openapi();
        let mut ids = Vec::new();
        for_each_operation(&mut doc, |op| ids.extend(op.operation_id.clone()));
        for id in examples.keys() {
            assert!(
                ids.contains(id),
                "openapi/examples.json names no operation {id}"
            );
        }
    }

    #[test]
    fn every_operation_has_a_request_and_a_response_example() {
        let mut doc = super::super::openapi();
        let mut missing = Vec::new();
        for_each_operation(&mut doc, |op| {
            let id = op.operation_id.clone().unwrap_or_default();
            let has_sample = op
                .extensions
                .as_ref()
                .is_some_and(|e| e.contains_key("x-codeSamples"));
            if !has_sample {
                missing.push(format!("{id}: no curl sample"));
            }
            if let Some(RefOr::T(body)) = &op.request_body {
                for (media, content) in &body.content {
                    let RefOr::T(content) = content else { continue };
                    if media.contains("json") && content.example.is_none() {
                        missing.push(format!("{id}: no request example for {media}"));
                    }
                }
            }
            for (status, response) in &op.responses.responses {
                let RefOr::T(r) = response else { continue };
                if !status.starts_with('2') {
                    continue;
                }
                for (media, content) in &r.content {
                    let RefOr::T(content) = content else { continue };
                    if content.example.is_none() {
                        missing.push(format!("{id}: no {status} example for {media}"));
                    }
                }
            }
        });
        assert!(
            missing.is_empty(),
            "openapi/examples.json lacks:\n{}",
            missing.join("\n")
        );
    }
}
