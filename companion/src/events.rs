//! The event stream's hub: what happens, told to every subscriber as the sampler publishes it.
//!
//! After each publication the sampler thread tells, in order, the process events the tracker saw
//! during that sample (`exec`, `exit`, `oom`; only the eBPF tracker sees them) and then one
//! `sample` event. Each event is encoded once; every `GET /api/v2/events` client reads it through
//! its own position in one shared ring of [`RING`] events. A client that falls a whole ring
//! behind is dropped and told so by a last `dropped` event: a slow or stalled client costs its
//! position in the ring and nothing more, whatever it does.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::{Serialize, Serializer};
use tokio::sync::broadcast;

use crate::{
    history::History,
    model::Sample,
    procfs::Pid,
    tracker::{ActivityKind, ActivityLog},
};

/// Events kept for subscribers: how far behind a client may fall before it is dropped.
pub const RING: usize = 4096;
/// Process events told per sample at most; the rest are only counted (in the `sample` event),
/// so that a burst of process churn cannot push every client out of the ring at once.
pub const MAX_PROCESS_EVENTS_PER_SAMPLE: usize = RING / 4;

/// What an event tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sample,
    Exec,
    Exit,
    Oom,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sample => "sample",
            Kind::Exec => "exec",
            Kind::Exit => "exit",
            Kind::Oom => "oom",
        }
    }
}

/// One event, encoded once for every subscriber.
#[derive(Debug)]
pub struct Encoded {
    /// Increases by one per event: a client sees from gaps whether it missed some.
    pub id: u64,
    pub kind: Kind,
    /// The container a process event is about (`None` for `sample`).
    pub container: Option<Arc<str>>,
    /// The event as JSON.
    pub data: String,
}

/// What travels through the ring.
#[derive(Clone, Debug)]
pub enum Message {
    Event(Arc<Encoded>),
    /// The service is stopping: streams end.
    Closed,
}

/// `data` of a `sample` event.
#[derive(Debug, Serialize)]
pub struct SampleEvent {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The sample's position in the sequence of samples.
    pub seq: u64,
    /// Containers with a listed process.
    pub containers: usize,
    /// Container processes tracked.
    pub processes: usize,
    /// Process events of this sample not told (more than [`MAX_PROCESS_EVENTS_PER_SAMPLE`], or
    /// more than the tracker keeps between two samples).
    pub process_events_dropped: u64,
}

/// `data` of an `exec`, `exit` or `oom` event.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessEvent {
    /// When the service learned of it (it drains the kernel's events at least once a sample).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub pid: Pid,
    /// The container path.
    pub container: Arc<str>,
    /// The command line, when a sample read it (a process that lived shorter than a sample
    /// period was never read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Arc<str>>,
    /// Exit code, for an exit when the kernel told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended the process, for an exit when the kernel told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer ended it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<bool>,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
#[error("too many event streams open ({0}); try again later")]
pub struct TooMany(pub usize);

/// The hub: shared by the sampler thread (which tells) and the API (which subscribes).
pub struct EventHub {
    sender: broadcast::Sender<Message>,
    next_id: AtomicU64,
    max_subscribers: usize,
    /// Streams ended because their client fell a ring behind.
    dropped_clients: AtomicU64,
    /// Process events not told (beyond the per-sample cap, or not kept by the tracker).
    dropped_events: AtomicU64,
}

impl EventHub {
    /// A hub serving at most `max_subscribers` streams at once.
    pub fn new(max_subscribers: usize) -> Arc<EventHub> {
        Arc::new(EventHub {
            sender: broadcast::Sender::new(RING),
            next_id: AtomicU64::new(1),
            max_subscribers,
            dropped_clients: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
        })
    }

    /// Whether anyone listens: nothing is encoded for nobody.
    pub fn is_watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// A new subscriber's position: it receives what is told from now on.
    pub fn subscribe(&self) -> Result<broadcast::Receiver<Message>, TooMany> {
        if self.sender.receiver_count() >= self.max_subscribers {
            return Err(TooMany(self.max_subscribers));
        }
        Ok(self.sender.subscribe())
    }

    /// Tells every subscriber. Without subscribers the event is dropped (and not encoded).
    pub fn tell(&self, kind: Kind, container: Option<Arc<str>>, data: &impl Serialize) {
        if !self.is_watched() {
            return;
        }
        let data = match serde_json::to_string(data) {
            Ok(data) => data,
            Err(err) => {
                tracing::warn!("encoding a {} event: {err}", kind.name());
                return;
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // An error only means that the last subscriber left meanwhile.
        let _ = self.sender.send(Message::Event(Arc::new(Encoded {
            id,
            kind,
            container,
            data,
        })));
    }

    /// Counts a stream ended because its client fell behind.
    pub fn client_dropped(&self) {
        self.dropped_clients.fetch_add(1, Ordering::Relaxed);
    }

    /// The hub's figures for /metrics.
    pub fn registry(&self) -> prometheus_client::registry::Registry {
        use prometheus_client::metrics::{counter::ConstCounter, gauge::ConstGauge};
        let mut registry = prometheus_client::registry::Registry::with_prefix("companion");
        registry.register(
            "event_stream_clients",
            "Open event streams (GET /api/v2/events)",
            ConstGauge::new(self.subscribers() as i64),
        );
        registry.register(
            "event_stream_events",
            "Events told to event stream clients",
            ConstCounter::new(self.next_id.load(Ordering::Relaxed) - 1),
        );
        registry.register(
            "event_stream_clients_dropped",
            "Event streams ended because their client fell behind",
            ConstCounter::new(self.dropped_clients.load(Ordering::Relaxed)),
        );
        registry.register(
            "event_stream_process_events_dropped",
            "Process events not told (a burst beyond the per-sample cap)",
            ConstCounter::new(self.dropped_events.load(Ordering::Relaxed)),
        );
        registry
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        let _ = self.sender.send(Message::Closed);
    }

    /// Tells what the newest sample of `history` brought: the tracker's process events of that
    /// sample, in the order they happened, then the `sample` event.
    pub fn tell_sample(&self, history: &History, activity: &ActivityLog) {
        if !self.is_watched() {
            return;
        }
        let Some(newest) = history.newest() else {
            return;
        };
        let previous = history.samples().rev().nth(1);
        let told = activity.seen.len().min(MAX_PROCESS_EVENTS_PER_SAMPLE);
        for seen in &activity.seen[..told] {
            let command = match seen.kind {
                ActivityKind::Exec => command_in(newest, &seen.container, seen.pid),
                ActivityKind::Exit => departed_command(newest, &seen.container, seen.pid)
                    .or_else(|| previous.and_then(|p| command_in(p, &seen.container, seen.pid))),
            };
            let event = ProcessEvent {
                time: seen.at,
                pid: seen.pid,
                container: seen.container.clone(),
                command,
                code: seen.code,
                signal: seen.signal,
                oom: None,
            };
            let kind = match seen.kind {
                ActivityKind::Exec => Kind::Exec,
                ActivityKind::Exit => Kind::Exit,
            };
            self.tell(kind, Some(seen.container.clone()), &event);
        }
        let dropped = (activity.seen.len() - told) as u64 + activity.dropped;
        self.dropped_events.fetch_add(dropped, Ordering::Relaxed);
        let containers = newest
            .containers()
            .filter(|(_, _, totals)| totals.listed > 0)
            .count();
        self.tell(
            Kind::Sample,
            None,
            &SampleEvent {
                time: newest.timestamp,
                seq: newest.seq,
                containers,
                processes: newest.processes().len(),
                process_events_dropped: dropped,
            },
        );
    }
}

/// The command line `sample` read for `pid` in `container`, if it read one.
fn command_in(sample: &Sample, container: &str, pid: Pid) -> Option<Arc<str>> {
    let processes = sample.container(container);
    let at = processes.binary_search_by_key(&pid, |p| p.info.pid).ok()?;
    let cmdline = &processes[at].info.cmdline;
    (!cmdline.is_empty()).then(|| cmdline.clone())
}

/// The command line of a process that departed `container` in `sample`.
fn departed_command(sample: &Sample, container: &str, pid: Pid) -> Option<Arc<str>> {
    let gone = sample.departed(container);
    let found = gone.iter().find(|d| d.info.pid == pid)?;
    (!found.info.cmdline.is_empty()).then(|| found.info.cmdline.clone())
}

fn rfc3339<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    match jiff::Timestamp::try_from(*time) {
        Ok(ts) => s.collect_str(&ts),
        Err(_) => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Activity;

    fn receive(rx: &mut broadcast::Receiver<Message>) -> Vec<(Kind, serde_json::Value)> {
        let mut out = Vec::new();
        while let Ok(message) = rx.try_recv() {
            if let Message::Event(e) = message {
                out.push((e.kind, serde_json::from_str(&e.data).unwrap()));
            }
        }
        out
    }

    fn activity(kind: ActivityKind, pid: Pid, container: &str) -> Activity {
        Activity {
            kind,
            pid,
            container: container.into(),
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            code: None,
            signal: None,
        }
    }

    #[test]
    fn process_events_in_order_then_the_sample() {
        let hub = EventHub::new(4);
        let mut rx = hub.subscribe().unwrap();
        let history =
            History::new(4).with(Sample::new(SystemTime::now(), 100, Vec::new(), Vec::new()));
        let log = ActivityLog {
            seen: vec![
                activity(ActivityKind::Exec, 7, "/a"),
                activity(ActivityKind::Exit, 7, "/a"),
                activity(ActivityKind::Exec, 9, "/b"),
            ],
            dropped: 2,
        };
        hub.tell_sample(&history, &log);
        let events = receive(&mut rx);
        let kinds: Vec<Kind> = events.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [Kind::Exec, Kind::Exit, Kind::Exec, Kind::Sample]);
        assert_eq!(events[0].1["pid"], 7);
        assert_eq!(events[0].1["container"], "/a");
        assert_eq!(events[0].1["time"], "2023-11-14T22:13:20Z");
        assert!(events[1].1.get("code").is_none(), "unknown: left out");
        assert_eq!(events[3].1["seq"], 1);
        assert_eq!(events[3].1["process_events_dropped"], 2);
    }

    #[test]
    fn bursts_are_capped_and_counted() {
        let hub = EventHub::new(4);
        let mut rx = hub.subscribe().unwrap();
        let history =
            History::new(4).with(Sample::new(SystemTime::now(), 100, Vec::new(), Vec::new()));
        let log = ActivityLog {
            seen: (0..MAX_PROCESS_EVENTS_PER_SAMPLE as u32 + 10)
                .map(|pid| activity(ActivityKind::Exec, pid, "/a"))
                .collect(),
            dropped: 0,
        };
        hub.tell_sample(&history, &log);
        let events = receive(&mut rx);
        assert_eq!(events.len(), MAX_PROCESS_EVENTS_PER_SAMPLE + 1);
        assert_eq!(events.last().unwrap().1["process_events_dropped"], 10);
    }

    #[test]
    fn nothing_is_encoded_for_nobody_and_subscribers_are_capped() {
        let hub = EventHub::new(2);
        hub.tell(Kind::Sample, None, &1);
        assert_eq!(hub.next_id.load(Ordering::Relaxed), 1, "not encoded");
        let a = hub.subscribe().unwrap();
        let _b = hub.subscribe().unwrap();
        assert!(hub.subscribe().is_err());
        drop(a);
        assert!(hub.subscribe().is_ok());
    }

    #[test]
    fn a_lagging_subscriber_is_told() {
        let hub = EventHub::new(2);
        let mut rx = hub.subscribe().unwrap();
        for n in 0..RING + 5 {
            hub.tell(Kind::Sample, None, &n);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
    }
}
