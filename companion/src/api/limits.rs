//! What a client can hold of the service, and for how long: requests in flight (until their
//! answer is fully sent), bytes of answers waiting to be sent (per connection and in all), and a
//! connection's idle and stalled time.
//!
//! The answers are built in memory before they are sent; a client that does not read (an HTTP/2
//! window of zero, a full TCP window) pins them. The budgets below count each answer's bytes from
//! the moment it is built until it is sent or dropped, so the memory clients can pin is bounded
//! whatever they do.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, HttpBody},
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tracing::warn;

use super::ApiError;

/// What an answer's body holds until it is dropped (permits, a connection's open request), told
/// of each frame the connection takes.
pub trait Held: Send + Sync + Unpin + 'static {
    fn frame_sent(&self) {}
}

impl Held for OwnedSemaphorePermit {}

impl Held for Buffered {}

/// A response body that keeps `held` until the body is dropped: when it has been sent, or when
/// its stream or connection is reset.
pub struct Holding<B, T> {
    inner: B,
    held: T,
}

impl<B: HttpBody + Unpin, T: Held> HttpBody for Holding<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.held.frame_sent();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a response's body so that `held` lives as long as the body.
pub fn hold<T: Held>(response: Response, held: T) -> Response {
    response.map(|inner| Body::new(Holding { inner, held }))
}

/// Requests handled at once, counted from admission until their answer is sent: an HTTP/2
/// stream whose answer waits for a window update still counts.
pub async fn admit(State(slots): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(permit) = slots.try_acquire_owned() else {
        return ApiError::Unavailable("overloaded: too many requests in flight".into())
            .into_response();
    };
    hold(next.run(request).await, permit)
}

/// Bytes of built answers not yet sent: in all, and per connection (see [`Activity`]).
pub struct ByteBudget {
    total: Arc<Semaphore>,
    total_bytes: u32,
}

impl ByteBudget {
    pub fn new(total_bytes: u32) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            total: Arc::new(Semaphore::new(total_bytes as usize)),
            total_bytes,
        })
    }

    /// The share of one connection: a quarter, so that one client cannot take it all.
    pub fn per_connection(total_bytes: u32) -> u32 {
        (total_bytes / 4).max(1)
    }
}

/// Counts each built answer against the budgets until it is sent; an answer that does not fit
/// is replaced by a 503 (and freed at once). An answer larger than a budget needs all of it.
/// Sits inside compression: the bytes counted are the uncompressed ones the body holds.
pub async fn budget(
    State(budget): State<Arc<ByteBudget>>,
    request: Request,
    next: Next,
) -> Response {
    let connection = request.extensions().get::<Arc<Activity>>().cloned();
    let response = next.run(request).await;
    let size = response.body().size_hint();
    let size = size.exact().unwrap_or(size.lower());
    if size == 0 {
        return response;
    }
    let need = |cap: u32| u32::try_from(size).unwrap_or(u32::MAX).min(cap);
    let Ok(total) = budget
        .total
        .clone()
        .try_acquire_many_owned(need(budget.total_bytes))
    else {
        return overloaded();
    };
    let own = match connection {
        Some(activity) => {
            match activity
                .buffered
                .clone()
                .try_acquire_many_owned(need(activity.buffered_bytes))
            {
                Ok(permit) => Some(permit),
                Err(_) => return overloaded(),
            }
        }
        None => None,
    };
    hold(
        response,
        Buffered {
            _total: total,
            _own: own,
            bytes: size,
        },
    )
}

/// An answer's share of the budgets, given back when its body is dropped (after the answer
/// itself, which the body holds first).
struct Buffered {
    _total: OwnedSemaphorePermit,
    _own: Option<OwnedSemaphorePermit>,
    bytes: u64,
}

/// Answers from this size on give their pages back to the system soon after they are freed.
const RELEASE_FROM_BYTES: u64 = 1 << 20;

impl Drop for Buffered {
    fn drop(&mut self) {
        if self.bytes >= RELEASE_FROM_BYTES {
            schedule_release();
        }
    }
}

/// Returns freed pages to the system shortly (once for a burst of large answers freed at once,
/// such as a stalled connection's): the allocator would otherwise keep them until the threads
/// that freed them allocate again, which idle API threads may not do for a long time.
fn schedule_release() {
    static SCHEDULED: AtomicBool = AtomicBool::new(false);
    if SCHEDULED.swap(true, Ordering::AcqRel) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                SCHEDULED.store(false, Ordering::Release);
                crate::allocator::release_freed();
            });
        }
        Err(_) => SCHEDULED.store(false, Ordering::Release),
    }
}

fn overloaded() -> Response {
    ApiError::Unavailable("overloaded: too many answers waiting to be sent".into()).into_response()
}

/// One connection's activity: requests open (admitted and not yet fully answered) and when
/// anything last happened. A watchdog closes the connection when it stays idle longer than the
/// header timeout (nothing open: a silent client, a slow request head, an idle keep-alive) or
/// makes no progress for the request timeout while answers are open (a client that stopped
/// reading).
pub struct Activity {
    open: AtomicUsize,
    last_progress: Mutex<Instant>,
    changed: Notify,
    buffered: Arc<Semaphore>,
    buffered_bytes: u32,
}

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Stalled,
}

impl Activity {
    pub fn new(buffered_bytes: u32) -> Arc<Activity> {
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            last_progress: Mutex::new(Instant::now()),
            changed: Notify::new(),
            buffered: Arc::new(Semaphore::new(buffered_bytes as usize)),
            buffered_bytes,
        })
    }

    fn progress(&self) {
        *self.last_progress.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.changed.notify_one();
    }

    /// Marks a request open until the returned guard (held by its answer's body) is dropped.
    pub fn begin(self: &Arc<Self>) -> OpenRequest {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.progress();
        OpenRequest(self.clone())
    }

    /// Resolves when the connection has been idle for `idle` or stalled for `stall`.
    pub async fn expired(&self, idle: Duration, stall: Duration) -> Expiry {
        loop {
            let notified = self.changed.notified();
            let last = *self.last_progress.lock().unwrap_or_else(|e| e.into_inner());
            let (limit, expiry) = match self.open.load(Ordering::Relaxed) {
                0 => (idle, Expiry::Idle),
                _ => (stall, Expiry::Stalled),
            };
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return expiry;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = notified => {}
            }
        }
    }
}

/// An open request of a connection; dropping it (answer sent or reset) counts as progress.
pub struct OpenRequest(Arc<Activity>);

/// Each frame sent is progress: a long answer (an event stream) that a client keeps reading
/// never stalls its connection, one it stopped reading does.
impl Held for OpenRequest {
    fn frame_sent(&self) {
        self.0.progress();
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.progress();
    }
}

/// A warning that may repeat once per connection (an abusive client reconnecting in a loop):
/// the first is logged, then at most one line per period with how many happened meanwhile.
pub struct Throttled {
    what: &'static str,
    period: Duration,
    state: Mutex<(Option<std::time::Instant>, u64)>,
    total: AtomicU64,
}

impl Throttled {
    pub const fn new(what: &'static str, period: Duration) -> Throttled {
        Throttled {
            what,
            period,
            state: Mutex::new((None, 0)),
            total: AtomicU64::new(0),
        }
    }

    /// Records one occurrence; logs it when the last line is older than the period.
    pub fn warn(&self, detail: &dyn std::fmt::Display) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, suppressed) = &mut *state;
        let now = std::time::Instant::now();
        if last.is_some_and(|last| now.duration_since(last) < self.period) {
            *suppressed += 1;
            return;
        }
        let times = *suppressed + 1;
        *last = Some(now);
        *suppressed = 0;
        drop(state);
        if times == 1 {
            warn!("{}: {detail}", self.what);
        } else {
            warn!(
                "{} ({times} times in the last {:?}; the latest: {detail})",
                self.what, self.period
            );
        }
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_and_stalled_connections_expire() {
        let (idle, stall) = (Duration::from_millis(100), Duration::from_millis(300));
        let activity = Activity::new(1024);
        let began = Instant::now();
        assert_eq!(activity.expired(idle, stall).await, Expiry::Idle);
        assert!(began.elapsed() >= idle);
        let open = activity.begin();
        let began = Instant::now();
        assert_eq!(activity.expired(idle, stall).await, Expiry::Stalled);
        assert!(began.elapsed() >= stall);
        // A request finishing is progress: idle counts from then.
        let waiter = tokio::spawn({
            let activity = activity.clone();
            async move { activity.expired(idle, Duration::from_secs(3600)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let finished = Instant::now();
        drop(open);
        assert_eq!(waiter.await.unwrap(), Expiry::Idle);
        assert!(finished.elapsed() >= idle);
    }

    #[test]
    fn throttled_warnings_are_counted() {
        let throttle = Throttled::new("test", Duration::from_secs(3600));
        for _ in 0..1000 {
            throttle.warn(&"x");
        }
        assert_eq!(throttle.total(), 1000);
        assert_eq!(throttle.state.lock().unwrap().1, 999);
    }
}
