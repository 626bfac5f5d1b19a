//! Lesson 06, the runnable story: start the HTTP gateway on 127.0.0.1, play its client for a moment — a good
//! event, a bad one, then what the gateway has read back — and shut it down gracefully.
//!
//! Run it with `cargo xtask lesson 06` (your exercise) or `cargo xtask lesson 06 --solution`. Add `--serve` to
//! keep the gateway up until Ctrl-C and try it with curl.

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::ProgressBar;
use reqwest::StatusCode;
use serde_json::{Value, json};
use solution_06::gateway::{Gateway, GatewaySettings};

/// Run an HTTP gateway in front of Kafka and talk to it.
#[derive(Parser)]
struct Args {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Keep serving until Ctrl-C instead of running the scripted demo.
    #[arg(long)]
    serve: bool,
    /// How many of the newest events `GET /messages` can show.
    #[arg(long, default_value_t = 50)]
    buffer: usize,
    /// How long a POST waits for Kafka's acknowledgement before answering 503, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    publish_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topic = kit::topics::USER_EVENTS;
    let broker = kit::story::start(&[topic]).await?;

    let mut settings = GatewaySettings::new(topic.name);
    settings.buffer_capacity = args.buffer;
    settings.publish_timeout = Duration::from_millis(args.publish_timeout_ms);
    let spinner = ProgressBar::new_spinner().with_message("connecting the gateway to Kafka");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let gateway = Gateway::start(broker.producer_config(), broker.consumer_base(), &settings).await;
    spinner.finish_and_clear();
    let gateway = gateway?;

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("gateway: {base} -> topic {}\n", topic.name);

    if args.serve {
        println!("Serving until Ctrl-C. Try:");
        println!(
            "  curl -i -X POST {base}/events -d '{{\"user_id\":\"user-1\",\"event_type\":\"purchase\",\"amount_cents\":1999}}'"
        );
        println!("  curl -i -X POST {base}/events -d '{{\"user_id\":\"\",\"event_type\":\"refund\"}}'");
        println!("  curl -s {base}/messages?limit=5");
        println!("  curl -i {base}/health\n");
        let report = gateway
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        println!("\nstopped: producer flushed = {}, events read = {}", report.producer_flushed, report.events_read);
        return Ok(());
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway.serve(listener, async {
        let _ = stopped.await;
    }));
    let demo = demo(&base).await;
    let _ = stop.send(());
    let report = server.await??;
    demo?;
    println!(
        "\nshut down gracefully: in-flight requests finished, reader stopped, producer flushed = {} ({} events read)",
        report.producer_flushed, report.events_read
    );
    println!("Next: lesson 07 turns these events into per-user totals (`cargo xtask lesson 07`).");
    Ok(())
}

/// The scripted client: one good event, one bad, then what the gateway read back.
async fn demo(base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();

    let good = json!({ "user_id": "user-1", "event_type": "purchase", "amount_cents": 1999 });
    let accepted = exchange(client.post(format!("{base}/events")).json(&good), "POST /events", Some(&good)).await?;
    let event_id = accepted["event_id"].as_str().unwrap_or_default().to_string();

    let bad = json!({ "user_id": " ", "event_type": "refund", "amount_cents": -5 });
    exchange(client.post(format!("{base}/events")).json(&bad), "POST /events", Some(&bad)).await?;

    // The reader runs on its own: wait (with a deadline) until it has read the accepted event back.
    let started = Instant::now();
    let seen = kit::wait::until("the reader to read the accepted event back", Duration::from_secs(5), || {
        let request = client.get(format!("{base}/messages?limit=3")).send();
        let event_id = event_id.clone();
        async move {
            let messages: Value = request.await?.json().await?;
            let seen =
                messages["messages"].as_array().is_some_and(|m| m.iter().any(|r| r["event"]["event_id"] == event_id));
            Ok(seen.then_some(()))
        }
    })
    .await;
    match seen {
        Ok(()) => println!("(the reader had it after {} ms)", started.elapsed().as_millis()),
        Err(e) => println!("({e}: the listing below may not show it yet)"),
    }
    exchange(client.get(format!("{base}/messages?limit=3")), "GET /messages?limit=3", None).await?;
    exchange(client.get(format!("{base}/health")), "GET /health", None).await?;
    Ok(())
}

/// Sends one request, prints it and its answer, and returns the answer's JSON.
async fn exchange(request: reqwest::RequestBuilder, what: &str, body: Option<&Value>) -> anyhow::Result<Value> {
    match body {
        Some(body) => println!("> {what} {body}"),
        None => println!("> {what}"),
    }
    let response = request.send().await?;
    let status: StatusCode = response.status();
    let answer: Value = response.json().await?;
    println!("< {status}\n{}\n", serde_json::to_string_pretty(&answer)?);
    Ok(answer)
}
