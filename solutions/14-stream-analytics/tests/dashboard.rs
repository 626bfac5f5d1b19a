//! Grades lesson 14's live dashboard over real HTTP, no broker: the page (`/`) is served whole and self-contained,
//! `/windows` answers the board's results in window order, `/events` replays every kept result and then streams each
//! new one as Server-Sent Events, and the board keeps one result per window, the latest `KEPT_WINDOWS` of them.
//!
//! The results published are made by the lesson's own windows (`Windows::accept`, then `Windows::close_due`) from
//! hand-made shoppers' events, so each test needs the exercise done before it can publish anything.

use std::time::{Duration, Instant};

use solution_14::dashboard::{Board, KEPT_WINDOWS, router};
use solution_14::windows::Windows;
use solution_14::{Activity, Catalog, Kind, WindowResult, WindowSpec};

/// One-minute windows with 10 s of grace, as the story's.
const SPEC: WindowSpec = WindowSpec { size_ms: 60_000, grace_ms: 10_000 };
/// 2026-01-01T00:00:00Z: a window's start.
const BASE_MS: i64 = 1_767_225_600_000;
/// How long a test waits for the dashboard to answer or stream something.
const WITHIN: Duration = Duration::from_secs(10);

/// The results of consecutive windows from `BASE_MS`, oldest first: window `i` holds `shoppers[i]` shoppers' sessions
/// (users U001.., each viewing a product, adding it to the cart and buying it). One last event, in the window after,
/// moves stream time to exactly when the last of them closes.
fn closed_windows(shoppers: &[usize]) -> Vec<WindowResult> {
    let catalog = Catalog::shipped();
    let mut windows = Windows::new(SPEC);
    let mut event = |user: usize, product: usize, kind: Kind, at_ms: i64| {
        let activity = Activity {
            event_id: format!("e-{at_ms}-{kind:?}"),
            user_id: format!("U{:03}", user + 1),
            product_id: format!("P{:03}", product % 10 + 1),
            kind,
            quantity: 1,
            event_time_ms: at_ms,
        };
        windows.accept(&activity, &catalog);
    };
    for (window, &count) in shoppers.iter().enumerate() {
        let start = BASE_MS + window as i64 * SPEC.size_ms;
        for shopper in 0..count {
            let at = start + shopper as i64 * 1_000;
            event(shopper, window + shopper, Kind::View, at);
            event(shopper, window + shopper, Kind::AddToCart, at + 100);
            event(shopper, window + shopper, Kind::Purchase, at + 200);
        }
    }
    let closing = SPEC.closes_at(BASE_MS + (shoppers.len() as i64 - 1) * SPEC.size_ms);
    event(0, 0, Kind::View, closing);
    let results = windows.close_due(&catalog, 3);
    assert_eq!(
        results.iter().map(|r| r.start_ms).collect::<Vec<_>>(),
        (0..shoppers.len() as i64).map(|i| BASE_MS + i * SPEC.size_ms).collect::<Vec<_>>(),
        "the windows made for the test close, in order"
    );
    results
}

/// Serves the dashboard of `board` on a free local port; its base URL.
async fn serve(board: Board) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = listener.local_addr().expect("the dashboard's address");
    tokio::spawn(async move { axum::serve(listener, router(board)).await.expect("the dashboard runs") });
    format!("http://{address}")
}

async fn get(base: &str, path: &str) -> reqwest::Response {
    tokio::time::timeout(WITHIN, reqwest::get(format!("{base}{path}")))
        .await
        .unwrap_or_else(|_| panic!("GET {path} got no answer within {WITHIN:?}"))
        .unwrap_or_else(|error| panic!("GET {path} failed: {error}"))
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string()).unwrap_or_default()
}

async fn kept(base: &str) -> Vec<WindowResult> {
    let response = get(base, "/windows").await;
    assert_eq!(response.status(), 200, "GET /windows");
    assert!(content_type(&response).starts_with("application/json"), "GET /windows answers JSON");
    response.json().await.expect("GET /windows answers a list of window results")
}

/// An open `/events` stream, read message by message.
struct Events {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Events {
    /// Connects to `/events`: once the headers are in, the server is following the board.
    async fn connect(base: &str) -> Events {
        let response = get(base, "/events").await;
        assert_eq!(response.status(), 200, "GET /events");
        assert!(content_type(&response).starts_with("text/event-stream"), "GET /events is an event stream");
        Events { response, buffer: Vec::new() }
    }

    /// The next `event: window` message's result (keep-alive comments skipped); fails after `WITHIN` without one.
    async fn next(&mut self, what: &str) -> WindowResult {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let message: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let message = String::from_utf8(message).expect("an event stream is UTF-8");
                let field = |name: &str| {
                    message.lines().find_map(|line| line.strip_prefix(name)).map(|v| v.strip_prefix(' ').unwrap_or(v))
                };
                let Some(data) = field("data:") else {
                    continue; // a comment: the keep-alive
                };
                assert_eq!(field("event:"), Some("window"), "every message of /events is a window's: {message:?}");
                return serde_json::from_str(data)
                    .unwrap_or_else(|error| panic!("a window message's data is a result as JSON ({error}): {data}"));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) => panic!("/events ended before {what}"),
                Ok(Err(error)) => panic!("reading /events failed before {what}: {error}"),
                Err(_) => panic!("no `event: window` message within {WITHIN:?}: {what}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_is_served_whole_and_self_contained() {
    let board = Board::default();
    for result in closed_windows(&[2, 3]) {
        board.publish(result);
    }
    let base = serve(board).await;

    let response = get(&base, "/").await;
    assert_eq!(response.status(), 200, "GET /");
    assert!(content_type(&response).starts_with("text/html"), "GET / is a page: {}", content_type(&response));
    let page = response.text().await.expect("the page's text");
    for title in [
        "Last closed window",
        "Events per window, by kind",
        "Revenue per window (EUR)",
        "Funnel of the last window",
        "Top products of the last window",
        "Activity by segment, last window",
    ] {
        assert!(page.contains(&format!("<h2>{title}</h2>")), "the page has a section {title:?}");
    }
    assert!(page.contains(r#"new EventSource("/events")"#), "the page follows /events");

    // Self-contained: it draws offline, and a test reads all of it.
    let lower = page.to_lowercase();
    for external in ["http://", "https://", "<script src", "@import"] {
        assert!(!lower.contains(external), "the page loads nothing from elsewhere, but it has {external:?}");
    }
    for link in lower.split("<link").skip(1) {
        let tag = &link[..link.find('>').unwrap_or(link.len())];
        assert!(!tag.contains("stylesheet"), "the page links no stylesheet: <link{tag}>");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_answers_the_results_in_window_order() {
    let results = closed_windows(&[1, 2, 3]);
    let board = Board::default();
    for index in [2, 0, 1] {
        board.publish(results[index].clone());
    }
    let base = serve(board).await;

    assert_eq!(kept(&base).await, results, "GET /windows: every result published, oldest window first");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_replay_the_kept_results_then_stream_new_ones() {
    let results = closed_windows(&[1, 2, 3]);
    let board = Board::default();
    board.publish(results[0].clone());
    board.publish(results[1].clone());
    let base = serve(board.clone()).await;

    let mut events = Events::connect(&base).await;
    assert_eq!(events.next("the first kept result").await, results[0], "the replay starts with the oldest window");
    assert_eq!(events.next("the second kept result").await, results[1], "then the next one");

    board.publish(results[2].clone());
    assert_eq!(
        events.next("the result published after the client connected").await,
        results[2],
        "after the replay, a new result comes as it is published (and nothing else before it)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_connected_before_two_publishes_gets_both_in_order() {
    let results = closed_windows(&[4, 1]);
    let board = Board::default();
    let base = serve(board.clone()).await;

    let mut events = Events::connect(&base).await;
    board.publish(results[0].clone());
    board.publish(results[1].clone());
    assert_eq!(events.next("the first result published").await, results[0], "the first published comes first");
    assert_eq!(events.next("the second result published").await, results[1], "then the second");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_for_a_kept_window_replaces_it() {
    let results = closed_windows(&[1, 2]);
    let again = closed_windows(&[3]).remove(0);
    assert_eq!(again.start_ms, results[0].start_ms, "a second result for the first window");
    assert_ne!(again, results[0], "a result that differs from the first one");
    let board = Board::default();
    board.publish(results[0].clone());
    board.publish(results[1].clone());
    board.publish(again.clone());
    let base = serve(board).await;

    let expected = vec![again, results[1].clone()];
    assert_eq!(kept(&base).await, expected, "GET /windows: one result per window, the latest published");
    let mut events = Events::connect(&base).await;
    assert_eq!(events.next("the first window's result").await, expected[0], "the replay shows the replacement");
    assert_eq!(events.next("the second window's result").await, expected[1], "and the first window only once");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_board_keeps_the_latest_windows_only() {
    let results = closed_windows(&vec![1; KEPT_WINDOWS + 2]);
    let board = Board::default();
    for result in &results {
        board.publish(result.clone());
    }
    let base = serve(board.clone()).await;

    assert_eq!(
        kept(&base).await,
        results[2..],
        "GET /windows: the latest {KEPT_WINDOWS} windows, the two oldest dropped"
    );
    // A result older than every window kept, on a full board, is the oldest: it goes at once.
    board.publish(results[0].clone());
    assert_eq!(kept(&base).await, results[2..], "GET /windows: still the latest {KEPT_WINDOWS} windows");
}
