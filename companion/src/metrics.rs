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

use crate::{api::AppState, cgroup::CgroupReading, inventory::ContainerSummary, store::Published};

/// `GET /metrics`.
pub async fn handler(State(state): State<AppState>) -> Response {
    let body = state
        .http_metrics
        .exposition(of_samples(&state.shared.load()), &state.events);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The labels of a container's series: its cgroup path, runtime and id, and what the runtime
/// calls it, named as cAdvisor and kube-state-metrics name them so dashboards can join them
/// (`namespace`, `pod`, `container` for Kubernetes). Unknown values are empty (= absent).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    path: String,
    runtime: String,
    id: String,
    name: String,
    image: String,
    namespace: String,
    pod: String,
    container: String,
}

/// Longest label value: names and images come from files any container's owner can shape;
/// longer values are cut (the encoder escapes what OpenMetrics requires).
const MAX_LABEL_VALUE: usize = 128;

fn label_value(value: Option<&str>) -> String {
    let value = value.unwrap_or("");
    let mut end = value.len().min(MAX_LABEL_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

impl ContainerLabels {
    /// The labels of a container known by its path only (removed: no names).
    fn of_path(path: &str) -> ContainerLabels {
        let identity = crate::cgroup::Identity::of(path);
        ContainerLabels {
            path: path.to_owned(),
            runtime: identity.runtime.unwrap_or("").to_owned(),
            id: identity.id.unwrap_or_default(),
            name: String::new(),
            image: String::new(),
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
        }
    }

    fn of(container: &ContainerSummary) -> ContainerLabels {
        let names = &container.names;
        ContainerLabels {
            path: container.path.to_string(),
            runtime: container.identity.runtime.unwrap_or("").to_owned(),
            id: container.identity.id.clone().unwrap_or_default(),
            name: label_value(names.name.as_deref()),
            image: label_value(names.image.as_deref()),
            namespace: label_value(names.namespace.as_deref()),
            pod: label_value(names.pod.as_deref()),
            container: label_value(names.container.as_deref()),
        }
    }
}

/// A container's pressure line: `resource` cpu, memory or io; `kind` some or full.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PressureLabels {
    #[prometheus(flatten)]
    container: ContainerLabels,
    resource: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExitLabels {
    #[prometheus(flatten)]
    container: ContainerLabels,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    /// The cgroup path of its container.
    path: String,
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
    registry.register(
        "sampler_threads",
        "Threads the newest sample's reads were split over (--sampler-threads)",
        ConstGauge::new(sampling.sampler_threads as i64),
    );
    registry.register(
        "open_descriptors",
        "Processes whose stat and status are read through descriptors kept open",
        ConstGauge::new(sampling.open_descriptors as i64),
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
    let cgroup = CgroupFamilies::default();
    for container in containers {
        let labels = ContainerLabels::of(container);
        processes
            .get_or_create(&labels)
            .set(container.processes as i64);
        cpu.get_or_create(&labels)
            .inc_by(container.cpu_seconds_total);
        rss.get_or_create(&labels).set(container.rss_bytes as i64);
        if let Some(bytes) = container.cgroup.limits.memory_bytes {
            limit.get_or_create(&labels).set(bytes as i64);
        }
        if let Some(reading) = &container.reading {
            cgroup.add(&labels, reading);
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
    cgroup.register(&mut registry);

    exit_families(&mut registry, published);

    if !top.is_empty() {
        let cores = Family::<ProcessLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let rss = Family::<ProcessLabels, Gauge>::default();
        for entry in top {
            let labels = ProcessLabels {
                path: entry.process.info.container.to_string(),
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

type GaugeF64 = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The series read from containers' cgroup files: the kernel's own counters, so Prometheus
/// computes rates over any window.
#[derive(Default)]
struct CgroupFamilies {
    cpu_limit: Family<ContainerLabels, GaugeF64>,
    periods: Family<ContainerLabels, Counter>,
    throttled_periods: Family<ContainerLabels, Counter>,
    throttled: Family<ContainerLabels, Counter<f64>>,
    memory_usage: Family<ContainerLabels, Gauge>,
    memory_high: Family<ContainerLabels, Gauge>,
    swap: Family<ContainerLabels, Gauge>,
    failcnt: Family<ContainerLabels, Counter>,
    oom_kills: Family<ContainerLabels, Counter>,
    stalled: Family<PressureLabels, Counter<f64>>,
}

impl CgroupFamilies {
    fn add(&self, labels: &ContainerLabels, reading: &CgroupReading) {
        let (cpu, memory) = (&reading.cpu, &reading.memory);
        if let Some(cores) = cpu.limit_cores {
            self.cpu_limit.get_or_create(labels).set(cores);
        }
        if let Some(stat) = &cpu.stat {
            self.periods.get_or_create(labels).inc_by(stat.periods);
            self.throttled_periods
                .get_or_create(labels)
                .inc_by(stat.throttled_periods);
            self.throttled
                .get_or_create(labels)
                .inc_by(stat.throttled_ns as f64 / 1e9);
        }
        let gauges = [
            (&self.memory_usage, memory.usage_bytes),
            (&self.memory_high, memory.high_bytes),
            (&self.swap, memory.swap_bytes),
        ];
        for (family, value) in gauges {
            if let Some(value) = value {
                family
                    .get_or_create(labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        for (family, value) in [
            (&self.failcnt, memory.failcnt),
            (&self.oom_kills, memory.oom_kills),
        ] {
            if let Some(value) = value {
                family.get_or_create(labels).inc_by(value);
            }
        }
        let Some(pressure) = &reading.pressure else {
            return;
        };
        for (resource, file) in [
            ("cpu", &pressure.cpu),
            ("memory", &pressure.memory),
            ("io", &pressure.io),
        ] {
            let Some(file) = file else { continue };
            for (kind, line) in [("some", Some(&file.some)), ("full", file.full.as_ref())] {
                let Some(line) = line else { continue };
                self.stalled
                    .get_or_create(&PressureLabels {
                        container: labels.clone(),
                        resource,
                        kind,
                    })
                    .inc_by(line.total_us as f64 / 1e6);
            }
        }
    }

    fn register(self, registry: &mut Registry) {
        registry.register(
            "container_cpu_limit_cores",
            "CPU cores the container's CFS quota allows (absent without a quota)",
            self.cpu_limit,
        );
        registry.register(
            "container_cpu_periods",
            "CFS enforcement periods in which the container was runnable (cpu.stat nr_periods)",
            self.periods,
        );
        registry.register(
            "container_cpu_throttled_periods",
            "CFS periods in which the container was throttled (cpu.stat nr_throttled)",
            self.throttled_periods,
        );
        registry.register_with_unit(
            "container_cpu_throttled",
            "Time the container's run queues spent throttled, summed over CPUs (cpu.stat)",
            Unit::Seconds,
            self.throttled,
        );
        registry.register_with_unit(
            "container_memory_usage",
            "Memory charged to the container's cgroup, page cache included (memory.usage_in_bytes, memory.current)",
            Unit::Bytes,
            self.memory_usage,
        );
        registry.register_with_unit(
            "container_memory_high",
            "memory.high of the container's cgroup (cgroup v2; absent when unlimited)",
            Unit::Bytes,
            self.memory_high,
        );
        registry.register_with_unit(
            "container_memory_swap",
            "Swap used by the container's cgroup, where the kernel accounts it",
            Unit::Bytes,
            self.swap,
        );
        registry.register(
            "container_memory_failcnt",
            "Times the container's memory usage hit its limit (cgroup v1 memory.failcnt)",
            self.failcnt,
        );
        registry.register(
            "container_memory_oom_kills",
            "Processes of the container killed by the OOM killer",
            self.oom_kills,
        );
        registry.register_with_unit(
            "container_pressure_stalled",
            "Time some (or all) of the container's tasks stalled on a resource (PSI totals, cgroup v2)",
            Unit::Seconds,
            self.stalled,
        );
    }
}

/// Ends and OOM kills per container, from the exit ledger: removed containers keep their series
/// while the ledger holds their entries.
fn exit_families(registry: &mut Registry, published: &Published) {
    let exits = Family::<ExitLabels, Counter>::default();
    let oom_kills = Family::<ContainerLabels, Counter>::default();
    let mut containers: Vec<_> = published.exits.containers.iter().collect();
    containers.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (path, ledger) in containers {
        // A listed container's labels (with its names); a removed one's from its path alone.
        let labels = match published
            .inventory
            .containers
            .binary_search_by(|c| (*c.path).cmp(&**path))
        {
            Ok(at) => ContainerLabels::of(&published.inventory.containers[at]),
            Err(_) => ContainerLabels::of_path(path),
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

    /// The whole exposition: the part rendered from the publication, the live counters (HTTP,
    /// event streams) and heap figures, the end marker.
    pub fn exposition(&self, from_samples: &str, events: &crate::events::EventHub) -> String {
        let mut out = String::with_capacity(from_samples.len() + 1024);
        out.push_str(from_samples);
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &events.registry());
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
