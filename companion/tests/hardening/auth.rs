//! The bearer token, and the start-up warning when listening beyond the host without one.

use super::*;

/// `--auth-token-file`: every route but /healthz needs `Authorization: Bearer <token>`.
/// Without the feature: the requests without (or with a wrong) token get 200, not 401.
#[test]
fn bearer_token_is_required() {
    let cg = TestCgroup::new();
    let dir = cg.temp_dir();
    let token = secret();
    let file = dir.join("token");
    // Surrounding whitespace (the file's newline) is not part of the token.
    fs::write(&file, format!("{token}\n")).unwrap();
    let service = Service::with_tracker(
        Tracker::Procfs,
        &["--auth-token-file", file.to_str().unwrap()],
    );
    let bearer = |value: &str| format!("Authorization: {value}\r\n");
    let mut same_length_wrong = token.clone().into_bytes();
    same_length_wrong[10] = if same_length_wrong[10] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let same_length_wrong = String::from_utf8(same_length_wrong).unwrap();
    let basic = base64(&format!("user:{token}"));
    let refused = [
        String::new(),
        bearer(&format!("Bearer {same_length_wrong}")),
        bearer(&format!("Bearer {token}x")),
        bearer(&format!("Bearer {}", &token[..token.len() - 1])),
        bearer("Bearer"),
        bearer("Bearer "),
        bearer(&format!("Basic {basic}")),
        bearer(&format!("Basic {token}")),
        bearer(&token),
        bearer(&format!("Token {token}")),
    ];
    for path in [
        "/api/v2/containers",
        "/api/v2/host",
        "/metrics",
        "/openapi.json",
        "/api/v1.0/docker/abc/processes",
    ] {
        for extra in &refused {
            let r = service.request("GET", path, extra);
            assert_eq!(r.status, 401, "{path} with {extra:?}: {}", r.text());
            let challenge = r
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("{path} with {extra:?}: 401 without WWW-Authenticate"));
            assert!(
                challenge.starts_with("Bearer"),
                "{path}: WWW-Authenticate {challenge:?}"
            );
        }
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let r = service.request("GET", path, &bearer(&format!("{scheme} {token}")));
            let expected = if path.starts_with("/api/v1.0") {
                500
            } else {
                200
            };
            assert_eq!(
                r.status,
                expected,
                "{path} with the right token ({scheme}): {}",
                r.text()
            );
        }
    }
    // /healthz stays open without --auth-healthz (503 is `stale`, on a loaded host).
    let r = service.get("/healthz");
    assert!(
        r.status == 200 || r.status == 503,
        "/healthz without a token: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.json()["tracker"], "procfs");
}

/// `--auth-healthz` closes /healthz too; an empty token file refuses to start.
/// Without the feature: /healthz answers 200 without a token; an empty file starts a service
/// that any empty (or no) token opens.
#[test]
fn bearer_token_for_healthz_and_empty_token_files() {
    let cg = TestCgroup::new();
    let dir = cg.temp_dir();
    let token = secret();
    let file = dir.join("token");
    fs::write(&file, &token).unwrap();
    let header = format!("Authorization: Bearer {token}\r\n");
    let probe = |addr: SocketAddr| http::request(addr, "GET", "/healthz", &header);
    let period = format!("{}ms", test_period().as_millis());
    let service = Service::start_with(
        &[
            "--tracker",
            "procfs",
            "--sample-period",
            &period,
            "--auth-token-file",
            file.to_str().unwrap(),
            "--auth-healthz",
        ],
        &StartOptions {
            probe: Some(&probe),
            ..StartOptions::default()
        },
    );
    let r = service.get("/healthz");
    assert_eq!(r.status, 401, "/healthz without a token: {}", r.text());
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
    let r = service.request("GET", "/healthz", "Authorization: Bearer wrong\r\n");
    assert_eq!(r.status, 401, "/healthz with a wrong token: {}", r.text());
    let r = service.request("GET", "/healthz", &header);
    assert!(
        r.status == 200 || r.status == 503,
        "/healthz with the token: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(r.json()["tracker"], "procfs");
    drop(service);

    for (name, content) in [("empty", ""), ("blank", "  \n\t\n")] {
        let empty = dir.join(name);
        fs::write(&empty, content).unwrap();
        let exit = run_to_exit(
            &[
                "--tracker",
                "procfs",
                "--auth-token-file",
                empty.to_str().unwrap(),
            ],
            REFUSAL,
        );
        assert!(
            exit.code().is_some_and(|c| c != 0),
            "{name} token file: {exit:?}"
        );
        assert!(
            exit.stderr.contains(empty.to_str().unwrap()) && exit.stderr.contains("empty"),
            "{name} token file: the message names neither the file nor the problem:\n{}",
            exit.stderr
        );
    }
}

/// Standard base64 (for a Basic credential).
fn base64(text: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const WARNING: &str = "without --auth-token-file";

/// Listening beyond loopback without a token logs a warning naming the risk.
/// Without the feature: no warning in the log.
#[test]
fn listening_beyond_the_host_without_a_token_warns() {
    let cg = TestCgroup::new();
    let token = cg.temp_dir().join("token");
    fs::write(&token, secret()).unwrap();

    let open = Service::with_tracker(Tracker::Procfs, &["--listen-ip", "0.0.0.0"]);
    let log = open.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning about listening without a token:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("anyone") && warning.contains("command lines"),
        "the warning does not name the risk: {warning}"
    );
    drop(open);

    let protected = Service::with_tracker(
        Tracker::Procfs,
        &[
            "--listen-ip",
            "0.0.0.0",
            "--auth-token-file",
            token.to_str().unwrap(),
        ],
    );
    let log = protected.log_text();
    assert!(!log.contains(WARNING), "warned despite a token:\n{log}");
    drop(protected);

    let local = Service::with_tracker(Tracker::Procfs, &[]);
    let log = local.log_text();
    assert!(!log.contains(WARNING), "warned on loopback:\n{log}");
}
