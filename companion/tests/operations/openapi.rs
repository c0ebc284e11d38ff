//! /openapi.json: served, valid, and covering the service's own route table.

use super::*;

/// /openapi.json is served: OpenAPI 3.0.x, the document in the source tree, and every route of
/// the service (ROUTES) among its paths, each with a GET answering 200.
#[test]
fn openapi_is_served() {
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    let r = service.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    let doc = r.json();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.0."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    // The service's own route table, as code.
    let routes: Vec<String> = companion::api::ROUTES.map(str::to_owned).to_vec();
    assert!(routes.len() >= 8, "ROUTES: {routes:?}");
    let paths = doc["paths"].as_object().expect("paths");
    for route in &routes {
        let item = paths
            .get(route)
            .unwrap_or_else(|| panic!("{route} is not in the served document"));
        assert!(
            item["get"]["responses"]["200"].is_object(),
            "{route}: GET with a 200 response"
        );
    }
    let documented: BTreeSet<&String> = paths.keys().collect();
    let served: BTreeSet<&String> = routes.iter().collect();
    assert_eq!(documented, served, "documented paths = routes");
    let file: Value = serde_json::from_str(include_str!("../../src/api/openapi.json"))
        .expect("the source document is JSON");
    assert_eq!(
        doc, file,
        "the served document is the one in the source tree"
    );
    // Every $ref resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {reference}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {reference} resolves");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref"
                    && let Some(s) = v.as_str()
                {
                    out.push(s.to_owned());
                }
                collect_refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
