//! `GET /api/v2/events`: the event hub as Server-Sent Events.
//!
//! The response only ends when the service stops or the client falls a ring's length behind
//! (then a last `dropped` event says so). Its head is sent at once, so the request timeout
//! (which covers the time to the head) does not cut it; the concurrency limit does not count it
//! either (it is released with the head), the hub's own limit of open streams does.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::Uri,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{ApiError, AppState, v2};
use crate::events::{Encoded, EventHub, Message};

/// Comment lines sent when nothing else is: proxies keep the stream open, a client that went
/// away is noticed, and a quiet stream is never taken for a stalled answer.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// `GET /api/v2/events[?container=REF]`.
pub async fn events(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let mut container = None;
    for (key, value) in form_urlencoded(uri.query()) {
        match key.as_str() {
            "container" if container.is_none() => container = Some(value),
            "container" => return Err(ApiError::BadRequest("container given twice".into())),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {other:?} (only container=REF is taken)"
                )));
            }
        }
    }
    let only: Option<Arc<str>> = match container {
        Some(reference) => Some(v2::resolve(&state, &reference)?.path),
        None => None,
    };
    let receiver = state
        .events
        .subscribe()
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    Ok(Sse::new(stream_of(receiver, only, state.events.clone()))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The events a subscriber is told: all, or those of one container (and every `sample`).
fn stream_of(
    receiver: broadcast::Receiver<Message>,
    only: Option<Arc<str>>,
    hub: Arc<EventHub>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some(receiver), move |receiver| {
        let only = only.clone();
        let hub = hub.clone();
        async move {
            let mut receiver = receiver?;
            loop {
                match receiver.recv().await {
                    Ok(Message::Event(event)) if wanted(&event, only.as_deref()) => {
                        return Some((Ok(sse(&event)), Some(receiver)));
                    }
                    Ok(Message::Event(_)) => {}
                    Ok(Message::Closed) | Err(RecvError::Closed) => return None,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "event stream client too slow: dropped");
                        hub.client_dropped();
                        let data = serde_json::json!({
                            "reason": format!(
                                "this client fell {missed} events behind; reconnect to resume"
                            ),
                            "missed": missed,
                        });
                        let last = Event::default().event("dropped").data(data.to_string());
                        return Some((Ok(last), None));
                    }
                }
            }
        }
    })
}

fn wanted(event: &Encoded, only: Option<&str>) -> bool {
    match (only, &event.container) {
        (Some(only), Some(container)) => **container == *only,
        _ => true,
    }
}

fn sse(event: &Encoded) -> Event {
    Event::default()
        .event(event.kind.name())
        .id(event.id.to_string())
        .data(&event.data)
}

/// `key=value` pairs of a query, percent-decoded (`+` is a space).
fn form_urlencoded(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Kind, RING};
    use futures_util::StreamExt;

    /// An event's fields, as its Debug shows its encoded bytes.
    fn text(event: Result<Event, Infallible>) -> String {
        format!("{:?}", event.unwrap())
    }

    #[tokio::test]
    async fn filters_by_container_and_passes_samples() {
        let hub = EventHub::new(4);
        let mut stream = Box::pin(stream_of(
            hub.subscribe().unwrap(),
            Some("/a".into()),
            hub.clone(),
        ));
        hub.tell(Kind::Exec, Some("/b".into()), &1);
        hub.tell(Kind::Exec, Some("/a".into()), &2);
        hub.tell(Kind::Sample, None, &3);
        hub.close();
        let told: Vec<String> = stream.by_ref().map(text).collect().await;
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(
            told[0].contains("exec") && told[0].contains('2'),
            "{told:?}"
        );
        assert!(told[1].contains("sample"), "{told:?}");
    }

    #[tokio::test]
    async fn a_client_a_ring_behind_is_told_and_ends() {
        let hub = EventHub::new(4);
        let mut stream = Box::pin(stream_of(hub.subscribe().unwrap(), None, hub.clone()));
        for n in 0..RING + 3 {
            hub.tell(Kind::Sample, None, &n);
        }
        let told: Vec<String> = stream.by_ref().map(text).collect().await;
        assert_eq!(told.len(), 1, "only the last word, then the end");
        assert!(told[0].contains("dropped") && told[0].contains("fell 3 events behind"));
    }

    #[test]
    fn queries() {
        assert_eq!(
            form_urlencoded(Some("container=%2Fdocker%2Fab+c&x")),
            [
                ("container".to_owned(), "/docker/ab c".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        assert!(form_urlencoded(None).is_empty());
    }
}
