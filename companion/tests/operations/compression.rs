//! Compressed answers (gzip, deflate) decode to the plain ones.

use super::*;

/// GET with an `Accept-Encoding` header (none when `None`).
fn get_encoded(service: &Service, path: &str, encoding: Option<&str>) -> Response {
    let extra = encoding.map_or(String::new(), |e| format!("Accept-Encoding: {e}\r\n"));
    service.request("GET", path, &extra)
}

fn decode(r: &Response, encoding: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let result = match encoding {
        "gzip" => flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut out),
        // HTTP's "deflate" is the zlib format (RFC 9110, 8.4.1.2).
        "deflate" => flate2::read::ZlibDecoder::new(&r.body[..]).read_to_end(&mut out),
        other => panic!("no decoder for {other}"),
    };
    result.unwrap_or_else(|e| panic!("the {encoding} body does not decode: {e}"));
    out
}

/// The structure of a JSON value: keys, array lengths and types, not values.
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// `Accept-Encoding: gzip` or `deflate` gets a compressed answer that decodes to the same
/// document; without the header (or with `identity`) nothing is compressed. For the v1.0
/// answer, /api/v2/containers, /metrics, /api/v2/host and /openapi.json.
#[test]
fn compression() {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pids: Vec<Pid> = (0..3).map(|_| cg.spawn(&[&c], spawn::sleeper())).collect();
    let service = Service::with_tracker(Tracker::Ebpf, &[]);
    wait_listed(&service, &c, &pids);
    service.wait_history(4);

    let processes = format!("{}?count=3", c.api_path());
    for path in [
        processes.as_str(),
        "/api/v2/containers",
        "/metrics",
        "/api/v2/host",
        "/openapi.json",
    ] {
        let plain = get_encoded(&service, path, None);
        assert_eq!(plain.status, 200, "{path}: {}", plain.text());
        assert_eq!(
            plain.header("content-encoding"),
            None,
            "{path} without Accept-Encoding"
        );
        let identity = get_encoded(&service, path, Some("identity"));
        assert_eq!(
            identity.header("content-encoding"),
            None,
            "{path} with identity"
        );
        for encoding in ["gzip", "deflate"] {
            let r = get_encoded(&service, path, Some(encoding));
            assert_eq!(r.status, 200);
            assert_eq!(
                r.header("content-encoding"),
                Some(encoding),
                "{path} with Accept-Encoding: {encoding}"
            );
            assert!(
                r.header("vary")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
                "{path}: Vary {:?}",
                r.header("vary")
            );
            assert_eq!(
                r.header("content-type"),
                plain.header("content-type"),
                "{path}"
            );
            let body = decode(&r, encoding);
            assert!(
                body.len() > r.body.len() || body.len() < 200,
                "{path}: {} bytes sent for {} decoded",
                r.body.len(),
                body.len()
            );
            let what = format!("{path} ({encoding})");
            if path == "/metrics" {
                // Per-container families come and go with the containers of other tests
                // between the two scrapes; the service's own are always there.
                let families = |e: Exposition| -> BTreeSet<(String, String)> {
                    e.families
                        .into_iter()
                        .filter(|f| !f.name.starts_with("companion_container_"))
                        .map(|f| (f.name, f.kind))
                        .collect()
                };
                let decoded = openmetrics::parse(&String::from_utf8(body).unwrap())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let plain = openmetrics::parse(&plain.text()).unwrap();
                assert_eq!(families(decoded), families(plain), "{what}");
                continue;
            }
            let decoded: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{what} is not JSON once decoded: {e}"));
            let plain_json = plain.json();
            match path {
                "/api/v2/host" | "/openapi.json" => assert_eq!(decoded, plain_json, "{what}"),
                "/api/v2/containers" => {
                    // Other containers of the host may come and go between the two answers.
                    let keys = |v: &Value| -> BTreeSet<Vec<String>> {
                        v.as_array()
                            .unwrap()
                            .iter()
                            .map(|c| c.as_object().unwrap().keys().cloned().collect())
                            .collect()
                    };
                    assert_eq!(keys(&decoded), keys(&plain_json), "{what}");
                    let ours = |v: &Value| shape(entry(v.as_array().unwrap(), &c.path).unwrap());
                    assert_eq!(ours(&decoded), ours(&plain_json), "{what}");
                }
                _ => {
                    assert_eq!(shape(&decoded), shape(&plain_json), "{what}");
                    let listed = |v: &Value| -> Vec<BTreeSet<Pid>> {
                        v.as_array().unwrap().iter().map(api::pids).collect()
                    };
                    assert_eq!(listed(&decoded), vec![pid_set(&pids); 3], "{what}");
                }
            }
        }
    }
}
