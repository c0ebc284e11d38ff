//! `/metrics` in OpenMetrics text: the service's own health, per-container figures and,
//! opt-in, the top processes; its HTTP handler and its renderer. What is derived from samples is
//! rendered once per publication, by the first scrape; a scrape only appends the live HTTP
//! counters and heap figures.

use std::fmt::Write as _;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::{Registry, Unit},
};

use crate::{api::AppState, store::Published};

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Response {
    let body = state
        .http_metrics
        .exposition(of_samples(&state.shared.load()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
    runtime: String,
    id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    #[prometheus(flatten)]
    container: ContainerLabels,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    container: String,
    pid: u32,
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackerLabels {
    tracker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

/// The families derived from a publication: rendered once, by its first scrape.
pub fn of_samples(published: &Published) -> &str {
    published.metrics.get_or_init(|| render_samples(published))
}

fn render_samples(published: &Published) -> String {
    let mut registry = Registry::with_prefix("companion");
    let stats = &published.tracker_stats;
    let sampling = &published.sampling;
    let (containers, top) = (&published.inventory.containers, &published.inventory.top);

    registry.register_with_unit(
        "sample_duration",
        "Time taken by one sample",
        Unit::Seconds,
        published.durations.0.clone(),
    );
    registry.register(
        "samples",
        "Samples taken",
        ConstCounter::new(sampling.samples_taken),
    );
    registry.register(
        "samples_slipped",
        "Scheduled samples skipped because the previous one overran its period",
        ConstCounter::new(sampling.samples_slipped),
    );
    registry.register(
        "tracked_processes",
        "Container processes in the newest sample",
        ConstGauge::new(sampling.tracked_processes as i64),
    );
    registry.register(
        "containers",
        "Containers in the newest sample",
        ConstGauge::new(sampling.containers as i64),
    );
    let tracker = Family::<TrackerLabels, Gauge>::default();
    tracker
        .get_or_create(&TrackerLabels {
            tracker: published.tracker.to_string(),
        })
        .set(1);
    registry.register("tracker", "The tracker in use (value 1)", tracker);
    registry.register(
        "degraded",
        "1 when the service runs on its fallback tracker",
        ConstGauge::new(i64::from(stats.degraded.is_some())),
    );
    registry.register(
        "bpf_events_received",
        "Kernel events applied to the tracked set",
        ConstCounter::new(stats.events_received),
    );
    registry.register(
        "bpf_events_lost",
        "Kernel events lost (ring buffer or map full)",
        ConstCounter::new(stats.events_lost),
    );
    registry.register(
        "reconciliations",
        "Full /proc scans that checked the tracked set",
        ConstCounter::new(stats.reconciliations),
    );
    registry.register(
        "reconciliation_repairs",
        "Tracked-set entries those scans added, removed or moved",
        ConstCounter::new(stats.repairs),
    );

    let processes = Family::<ContainerLabels, Gauge>::default();
    let cpu = Family::<ContainerLabels, Counter<f64>>::default();
    let rss = Family::<ContainerLabels, Gauge>::default();
    let limit = Family::<ContainerLabels, Gauge>::default();
    for container in containers {
        let labels = ContainerLabels {
            container: container.path.to_string(),
            runtime: container.identity.runtime.unwrap_or("").to_owned(),
            id: container.identity.id.clone().unwrap_or_default(),
        };
        processes
            .get_or_create(&labels)
            .set(container.processes as i64);
        cpu.get_or_create(&labels)
            .inc_by(container.cpu_seconds_total);
        rss.get_or_create(&labels).set(container.rss_bytes as i64);
        if let Some(bytes) = container.memory_limit_bytes {
            limit.get_or_create(&labels).set(bytes as i64);
        }
    }
    registry.register(
        "container_processes",
        "Processes listed for the container",
        processes,
    );
    registry.register_with_unit(
        "container_cpu",
        "CPU used by the container's processes since the service follows it",
        Unit::Seconds,
        cpu,
    );
    registry.register_with_unit(
        "container_memory_rss",
        "Resident memory of the container's processes",
        Unit::Bytes,
        rss,
    );
    registry.register_with_unit(
        "container_memory_limit",
        "Memory limit of the container's cgroup (absent when unlimited)",
        Unit::Bytes,
        limit,
    );

    exit_families(&mut registry, published);

    if !top.is_empty() {
        let cores = Family::<ProcessLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let rss = Family::<ProcessLabels, Gauge>::default();
        for entry in top {
            let labels = ProcessLabels {
                container: entry.process.info.container.to_string(),
                pid: entry.process.info.pid,
                comm: entry.process.stat.comm.trim_matches(['(', ')']).to_owned(),
            };
            cores.get_or_create(&labels).set(entry.cores);
            rss.get_or_create(&labels)
                .set((entry.process.rss_kb() * 1024) as i64);
        }
        registry.register(
            "process_cpu_cores",
            "CPU of the busiest processes over the last interval, in cores (--metrics-top-processes)",
            cores,
        );
        registry.register_with_unit(
            "process_memory_rss",
            "Resident memory of the busiest processes (--metrics-top-processes)",
            Unit::Bytes,
            rss,
        );
    }

    let mut out = String::new();
    if text::encode_registry(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

/// Ends and OOM kills per container, from the exit ledger: removed containers keep their series
/// while the ledger holds their entries.
fn exit_families(registry: &mut Registry, published: &Published) {
    let exits = Family::<ExitLabels, Counter>::default();
    let oom_kills = Family::<ContainerLabels, Counter>::default();
    let mut containers: Vec<_> = published.exits.containers.iter().collect();
    containers.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (path, ledger) in containers {
        let identity = crate::cgroup::Identity::of(path);
        let labels = ContainerLabels {
            container: path.to_string(),
            runtime: identity.runtime.unwrap_or("").to_owned(),
            id: identity.id.clone().unwrap_or_default(),
        };
        let reasons = ledger.totals.by_reason;
        for (reason, value) in [
            ("exit", reasons.exit),
            ("signal", reasons.signal),
            ("oom", reasons.oom),
            ("unknown", reasons.unknown),
        ] {
            let labels = ExitLabels {
                container: labels.clone(),
                reason,
            };
            exits.get_or_create(&labels).inc_by(value);
        }
        oom_kills
            .get_or_create(&labels)
            .inc_by(ledger.totals.oom_kills_total);
    }
    registry.register(
        "container_exits",
        "Processes of the container that ended since the service follows it, by reason: exit() \
         (any code), a signal other than an OOM kill, an OOM kill the kernel reported, or unknown \
         (seen gone by the /proc-scan tracker)",
        exits,
    );
    registry.register(
        "container_oom_kills",
        "OOM kills in the container since the service follows it: the larger of the victims the \
         kernel reported and the cgroup's own oom_kill counter",
        oom_kills,
    );
}

/// Counters updated by every request.
pub struct HttpMetrics {
    registry: Registry,
    requests: Family<HttpLabels, Counter>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("companion");
        let requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        HttpMetrics { registry, requests }
    }
}

impl HttpMetrics {
    pub fn count(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The whole exposition: the part rendered from the publication, the live counters and heap figures, the end
    /// marker.
    pub fn exposition(&self, from_samples: &str) -> String {
        let mut out = String::with_capacity(from_samples.len() + 1024);
        out.push_str(from_samples);
        let _ = text::encode_registry(&mut out, &self.registry);
        if let Some(heap) = heap_registry() {
            let _ = text::encode_registry(&mut out, &heap);
        }
        let _ = text::encode_eof(&mut out);
        let _ = out.write_str("");
        out
    }
}

/// The allocator's figures, read at each scrape: what the service holds (allocated) against
/// what that costs in memory (resident), so a growing RSS can be told apart from a leak.
fn heap_registry() -> Option<Registry> {
    let heap = crate::allocator::heap_figures()?;
    let mut registry = Registry::with_prefix("companion");
    registry.register_with_unit(
        "heap_allocated",
        "Heap bytes in live allocations of the service (jemalloc stats.allocated)",
        Unit::Bytes,
        ConstGauge::new(heap.allocated as i64),
    );
    registry.register_with_unit(
        "heap_resident",
        "Resident bytes of the heap: live allocations, allocator metadata, partly used slabs and free pages not yet returned (jemalloc stats.resident)",
        Unit::Bytes,
        ConstGauge::new(heap.resident as i64),
    );
    Some(registry)
}
