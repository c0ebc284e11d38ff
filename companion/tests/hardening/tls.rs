//! TLS and mutual TLS.

use super::*;

/// Starts a TLS service; `client` is the identity its readiness probe presents (mutual TLS).
fn tls_service(
    pki: &testbed::tls::Pki,
    client_ca: Option<&Path>,
    client: Option<&testbed::tls::Identity>,
) -> Service {
    let config = testbed::tls::client_config(&[pki.ca.cert()], client);
    let probe = move |addr: SocketAddr| testbed::tls::get(addr, config.clone(), "/healthz", "");
    let period = format!("{}ms", test_period().as_millis());
    let mut args = vec![
        "--tracker",
        "procfs",
        "--sample-period",
        &period,
        "--tls-cert",
        pki.cert_file.to_str().unwrap(),
        "--tls-key",
        pki.key_file.to_str().unwrap(),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca", ca.to_str().unwrap()]);
    }
    Service::start_with(
        &args,
        &StartOptions {
            probe: Some(&probe),
            ..StartOptions::default()
        },
    )
}

/// Whether what a plain-HTTP request to the port received is an HTTP answer.
fn plain_http_answer(addr: SocketAddr) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    received.starts_with(b"HTTP/").then_some(received)
}

/// `--tls-cert/--tls-key`: HTTPS with the v1.0 answer; plain HTTP gets no HTTP answer.
/// Without the feature: the TLS handshake fails and the plain request gets a 200.
#[test]
fn tls_serves_https_only() {
    let cg = TestCgroup::new();
    let pki = testbed::tls::Pki::new(&cg.temp_dir());
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = tls_service(&pki, None, None);
    let config = testbed::tls::client_config(&[pki.ca.cert()], None);
    let answer = wait_for("the container over HTTPS", service.patience(), || {
        let r = testbed::tls::get(service.addr, config.clone(), &c.api_path(), "")
            .map_err(|e| format!("{e}"))?;
        if r.status != 200 {
            return Err(format!("{} {}", r.status, r.text()));
        }
        let snapshots = api::check_answer(&r, &c.path, "");
        let pids = api::pids(snapshots.last().unwrap());
        if pids == pid_set(&[pid]) {
            Ok(snapshots)
        } else {
            Err(format!("listed {pids:?}"))
        }
    });
    let process = api::find(answer.last().unwrap(), pid).unwrap();
    assert_eq!(process["cmdline"], spawn::SLEEPER_CMDLINE);
    assert_eq!(process["cgroup"], c.path.as_str());

    if let Some(received) = plain_http_answer(service.addr) {
        panic!(
            "a plain-HTTP request to the TLS port got an HTTP answer: {:?}",
            String::from_utf8_lossy(&received)
        );
    }
    // A client that does not trust the server's CA does not get through either.
    let stranger = testbed::tls::client_config(&[testbed::tls::Ca::new("another CA").cert()], None);
    assert!(testbed::tls::get(service.addr, stranger, "/healthz", "").is_err());
    // And the service still serves after those.
    let r =
        testbed::tls::get(service.addr, config, "/api/v2/host", "").expect("HTTPS /api/v2/host");
    assert_eq!(r.status, 200);
}

/// `--tls-client-ca`: only clients with a certificate signed by that CA are served.
/// Without the feature: the clients without a certificate or with another CA's get 200.
#[test]
fn mutual_tls_requires_a_certificate_of_the_client_ca() {
    let cg = TestCgroup::new();
    let dir = cg.temp_dir();
    let pki = testbed::tls::Pki::new(&dir);
    let client_ca = testbed::tls::Ca::new("companion test client CA");
    let client_ca_file = dir.join("client-ca.pem");
    fs::write(&client_ca_file, client_ca.pem()).unwrap();
    let good = client_ca.client("good client");
    // Signed by the CA of the server certificate: trusted for servers, not for clients.
    let server_ca_client = pki.ca.client("client of the server CA");
    let other = testbed::tls::Ca::new("another CA").client("other client");
    let service = tls_service(&pki, Some(&client_ca_file), Some(&good));
    let roots = [pki.ca.cert()];

    let with = |identity: Option<&testbed::tls::Identity>| {
        testbed::tls::get(
            service.addr,
            testbed::tls::client_config(&roots, identity),
            "/api/v2/containers",
            "",
        )
    };
    let r = with(Some(&good)).expect("a client with a good certificate");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().is_array());
    for (what, identity) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(&other)),
        ("a certificate of the server's CA", Some(&server_ca_client)),
    ] {
        match with(identity) {
            Err(_) => {}
            Ok(r) => panic!("a client with {what} was served: {} {}", r.status, r.text()),
        }
    }
    assert!(plain_http_answer(service.addr).is_none());
    let r = with(Some(&good)).expect("the good client again");
    assert_eq!(r.status, 200);
}
