//! The web page in a real browser: Debian's `chromium`, headless, driven through WebDriver
//! (`chromium-driver`, started by the test on a free loopback port and killed by PID after).
//! The page loads without console errors, lists a container, draws the sparklines, shows the
//! busy process first near 100 %, shows a process started after it opened within two samples,
//! and gives no data without the token when one is set. Screenshots are written to
//! `target/screenshots/` (to `docs/screenshots/`, the README's, with
//! `COMPANION_UPDATE_SCREENSHOTS=1`).
//!
//! Each test says in a `Without the feature:` line what would fail if the feature were absent.

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, wd::WebDriverCompatibleCommand};
use serde_json::{Value, json};
use testbed::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, cpu_heavy, service::free_port, spawn,
    unique_id, wait_for,
};

// --- the browser -------------------------------------------------------------------------------

/// chromedriver, started on a free loopback port; killed (by its PID) and reaped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        let program = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|p| which(p))
            .expect("chromedriver is needed (`cargo xtask setup` installs chromium-driver)");
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver { child, port };
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only; chromedriver ends its browsers with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).exists()))
}

/// WebDriver's log command (chromedriver's): the browser console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// A headless browser session; every call blocks (the tests are plain threads).
struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let driver = Driver::start(&profile.path().join("chromedriver.log"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is needed (`cargo xtask setup` installs it)");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1400,900", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            }),
        );
        capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = runtime
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .expect("a WebDriver session");
        Browser {
            runtime,
            client: Some(client),
            _driver: driver,
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("open")
    }

    fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page; its JSON result.
    fn js(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("running {script}: {e}"))
    }

    fn click(&self, css: &str) {
        self.runtime
            .block_on(async { self.client().find(Locator::Css(css)).await?.click().await })
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        self.runtime
            .block_on(async {
                let element = self.client().find(Locator::Css(css)).await?;
                element.clear().await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
    }

    /// Polls `script` until it returns something truthy; returns it.
    fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        wait_for(what, timeout, || {
            let value = self.js(script);
            match &value {
                Value::Null | Value::Bool(false) => Err(format!("{value}")),
                Value::String(s) if s.is_empty() => Err("empty".into()),
                _ => Ok(value),
            }
        })
    }

    /// The console's messages since the last call: (level, message).
    fn console(&self) -> Vec<(String, String)> {
        let log = self
            .runtime
            .block_on(self.client().issue_cmd(BrowserLog))
            .expect("the browser log");
        log.as_array()
            .expect("log entries")
            .iter()
            .map(|entry| {
                (
                    entry["level"].as_str().unwrap_or("").to_owned(),
                    entry["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// Saves a screenshot as `name`: under target/screenshots, and under docs/screenshots
    /// (what the README shows) with `COMPANION_UPDATE_SCREENSHOTS=1`.
    fn screenshot(&self, name: &str) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("target/screenshots")];
        if std::env::var_os("COMPANION_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
            dirs.push(root.join("docs/screenshots"));
        }
        for dir in dirs {
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(name), &png).unwrap();
            eprintln!("screenshot: {}", dir.join(name).display());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}

fn errors(console: &[(String, String)]) -> Vec<&(String, String)> {
    console
        .iter()
        .filter(|(level, _)| level == "SEVERE")
        .collect()
}

// --- helpers ------------------------------------------------------------------------------------

fn docker_container(cg: &TestCgroup) -> (Container, String) {
    let id = unique_id();
    (
        cg.container_at(&format!("/docker/{id}"), &[Hierarchy::Cpu]),
        id,
    )
}

fn wait_listed(service: &Service, container: &Container, pids: &[Pid]) {
    let expected = pids.iter().copied().collect();
    service.wait_pids(&container.path, Some(&expected), service.patience());
}

/// The cells' text of each row of `table`, with the row's `data-*` key.
fn rows_script(table: &str, key: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#{table} tbody tr')]\
         .map(tr => [tr.dataset.{key}, ...[...tr.cells].map(td => td.textContent)]);"
    )
}

// --- tests ----------------------------------------------------------------------------------------

/// The list and one container, live: the container is listed by name (its short id here),
/// with a drawn CPU sparkline; its view shows the busy process first near 100 % of the
/// container's CPU with its own sparkline; a process started after the page opened shows up
/// within two samples, and its exec among the live events; no console error throughout.
/// Without the feature: no page at `/` (404), or an empty or stale one.
#[test]
fn the_page_shows_containers_and_processes_live() {
    let _cpu = cpu_heavy();
    let cg = TestCgroup::new();
    let (c, id) = docker_container(&cg);
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(Tracker::Ebpf, &["--sample-period", "500ms"]);
    wait_listed(&service, &c, &[busy, idle]);
    // A few samples of history for the sparklines.
    service.wait_history(6);

    let browser = Browser::start();
    browser.goto(&format!("http://{}/", service.addr));
    let row = format!("#containers tr[data-path=\"{}\"]", c.path);
    let name = browser.wait_js(
        "the container listed",
        service.patience(),
        &format!("const r = document.querySelector('{row}'); return r && r.querySelector('.name a').textContent;"),
    );
    assert_eq!(
        name,
        id[..12],
        "named by its short id (no runtime name here)"
    );
    let line = browser.wait_js(
        "its CPU sparkline",
        service.patience(),
        &format!("return document.querySelector('{row} svg.spark path.line').getAttribute('d');"),
    );
    let points = line.as_str().unwrap().matches(['M', 'L']).count();
    assert!(points >= 5, "a line through the history: {line}");
    let now = browser.js(&format!(
        "return document.querySelector('{row} .cpu b').textContent;"
    ));
    let now: f64 = now
        .as_str()
        .unwrap()
        .trim_end_matches(" %")
        .parse()
        .unwrap();
    // Its share of a core depends on the machine's load; that it runs does not.
    assert!(now > 1.0, "the busy container's CPU now: {now}");
    // Filtering by text keeps the row, and hides it for text it does not hold.
    browser.type_into("#filter", &id[..20]);
    assert_eq!(
        browser.js(&format!("return !!document.querySelector('{row}');")),
        true
    );
    browser.type_into("#filter", "no-such-container-text");
    assert_eq!(
        browser.js(&format!("return !!document.querySelector('{row}');")),
        false
    );
    browser.type_into("#filter", "");
    browser.wait_js(
        "the row back",
        service.patience(),
        &format!("return !!document.querySelector('{row}');"),
    );
    browser.screenshot("containers.png");

    browser.click(&format!("{row} .name a"));
    let first = browser.wait_js(
        "the busy process first, near 100 %",
        service.patience(),
        &format!(
            "{} const rows = r(); if (rows.length < 2) return null; \
             const share = parseFloat(rows[0][3]); \
             return rows[0][0] === '{busy}' && share >= 90 ? rows[0] : null;",
            rows_script("processes", "pid").replace("return ", "const r = () => ")
        ),
    );
    eprintln!("first row: {first}");
    let spark = browser.wait_js(
        "the busy process's sparkline",
        service.patience(),
        &format!(
            "const svg = document.querySelector('#processes tr[data-pid=\"{busy}\"] svg.spark path.line'); \
             return svg && svg.getAttribute('d');"
        ),
    );
    assert!(spark.as_str().unwrap().contains('L'), "{spark}");

    // A process started now shows up within two samples.
    let started_at = service.samples_taken();
    let late = cg.spawn(&[&c], spawn::sleeper());
    browser.wait_js(
        "the new process listed",
        service.period * 6,
        &format!("return !!document.querySelector('#processes tr[data-pid=\"{late}\"]');"),
    );
    let samples = service.samples_taken() - started_at;
    assert!(samples <= 2, "shown after {samples} samples");
    let live = browser.wait_js(
        "its exec among the live events",
        service.patience(),
        &format!(
            "return [...document.querySelectorAll('#live li.exec')].map(li => li.textContent)\
             .find(t => t.includes(' {late} ')) || null;"
        ),
    );
    assert!(live.as_str().unwrap().contains("sleep"), "{live}");
    browser.screenshot("container.png");

    let console = browser.console();
    assert!(errors(&console).is_empty(), "console errors: {console:?}");
}

/// With `--auth-token-file` the page asks for the token and shows nothing until it has it: a
/// wrong one is refused, the right one opens the list (sent as a bearer header).
/// Without the feature: data without the token, or no way to give it.
#[test]
fn the_page_asks_for_the_token() {
    let cg = TestCgroup::new();
    let (c, id) = docker_container(&cg);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let dir = cg.temp_dir();
    let token = format!("t{}", &unique_id()[16..48]);
    fs::write(dir.join("token"), &token).unwrap();
    let service = Service::start_with(
        &[
            "--tracker",
            "procfs",
            "--auth-token-file",
            dir.join("token").to_str().unwrap(),
        ],
        &Default::default(),
    );
    assert!(pid > 0);

    let browser = Browser::start();
    browser.goto(&format!("http://{}/", service.addr));
    browser.wait_js(
        "the token form",
        service.patience(),
        "return !document.getElementById('login').hidden;",
    );
    let shown = browser.js("return [document.getElementById('list-view').hidden, \
         document.querySelectorAll('#containers tbody tr').length, document.body.innerText];");
    assert_eq!(shown[0], true, "no list");
    assert_eq!(shown[1], 0, "no rows");
    assert!(
        !shown[2].as_str().unwrap().contains(&id[..12]),
        "no data: {shown}"
    );

    browser.type_into("#token", "wrong");
    browser.click("#login-form button");
    browser.wait_js(
        "the refusal",
        service.patience(),
        "return document.getElementById('login-error').textContent;",
    );
    assert_eq!(
        browser.js("return document.getElementById('list-view').hidden;"),
        true
    );

    browser.type_into("#token", &token);
    browser.click("#login-form button");
    let row = format!("#containers tr[data-path=\"{}\"]", c.path);
    browser.wait_js(
        "the list, once the token is given",
        service.patience(),
        &format!("return !!document.querySelector('{row}');"),
    );
    // Live: the event stream was accepted too.
    browser.wait_js(
        "the stream live",
        service.patience(),
        "return document.getElementById('status').textContent === 'live';",
    );
    // Only the refused requests (401) may show as errors.
    let console = browser.console();
    let unexpected: Vec<_> = errors(&console)
        .into_iter()
        .filter(|(_, message)| !message.contains("401"))
        .collect();
    assert!(unexpected.is_empty(), "console errors: {console:?}");
}

/// The page's files are served from the binary, with a policy that forbids loading anything
/// from elsewhere, and they reference nothing elsewhere; `--ui false` turns the page off and
/// leaves the API.
/// Without the feature: 404 at `/`, or a page that would load remote code.
#[test]
fn the_page_is_self_contained_and_can_be_turned_off() {
    let service = Service::with_tracker(Tracker::Procfs, &[]);
    let page = service.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(page.media_type().as_deref(), Some("text/html"));
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    for (path, media) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = service.get(path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.media_type().as_deref(), Some(media), "{path}");
        let text = r.text();
        for remote in ["http://", "https://", "//cdn", "@import"] {
            let allowed = text.matches("http://www.w3.org/2000/svg").count();
            let found = text.matches(remote).count();
            assert!(
                found == 0 || (remote == "http://" && found == allowed),
                "{path}: {remote}"
            );
        }
    }
    assert!(!page.text().contains("http"), "nothing remote in the page");
    drop(service);

    let off = Service::with_tracker(Tracker::Procfs, &["--ui", "false"]);
    for path in ["/", "/ui/app.js", "/ui/app.css"] {
        assert_eq!(off.get(path).status, 404, "{path} with --ui false");
    }
    assert_eq!(off.get("/api/v2/containers").status, 200);
}
