//! Grades the notification consumer on the broker (CI runs it on both brokers): through a provider outage and
//! its recovery — the breaker opens within its threshold and the provider sees only probes after that; the
//! consumer's partitions are paused (librdkafka's own count of records fetched while the breaker cools down
//! stays at zero); only what was handled is committed; and in the end every order has exactly one e-mail. And an
//! e-mail the provider refuses for good goes to `mail.dlq` once, with why, and is committed.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kit_testing::{broker, unique};
use lesson_15::mailer::{MailerStats, header};
use lesson_15::{BreakerConfig, BreakerState, FakeProvider, Mailer, Mode, Resilience};
use tokio::time::Instant;

fn order_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("order-{n:02}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn through_an_outage_the_consumer_pauses_commits_only_what_it_sent_and_every_order_gets_one_email() {
    let topics = mail_topics().await;
    let provider = FakeProvider::start().await.expect("a fake provider");
    // A cool-down of 3 s: long enough to watch 1.5 s of it after the orders below are sent. librdkafka starts
    // fetching a resumed partition at its broker thread's next wake-up, up to a second later, so a consumer that
    // resumes during the cool-down is seen fetching within that window.
    let resilience =
        Resilience { breaker: BreakerConfig { failure_threshold: 3, cool_down: Duration::from_secs(3) }, ..settings() };
    let (threshold, cool_down) = (resilience.breaker.failure_threshold as usize, resilience.breaker.cool_down);
    let group = unique("lesson15-mailer");
    let mailer = Mailer::new(
        broker().consumer_config(&group),
        broker().producer_config(),
        topics.clone(),
        client(&provider.url(), &resilience),
    )
    .expect("a mailer");
    let mut running = Running::start(mailer);
    let (stats, fetched, breaker) = (running.stats.clone(), running.fetched.clone(), running.breaker.clone());

    // Healthy: nine orders, nine e-mails.
    let healthy = order_ids(0..9);
    let mut positions = publish(&topics.requests, &healthy).await;
    wait_for(&mut running, "the healthy orders' e-mails", Duration::from_secs(30), async || {
        (provider.accepted().len() >= healthy.len()).then_some(())
    })
    .await;

    // The outage: the next order meets a provider that answers 503 to everything.
    let outage = Instant::now();
    provider.set_mode(Mode::Failing(503)).await.unwrap();
    positions.extend(publish(&topics.requests, &order_ids(9..10)).await);
    wait_for(
        &mut running,
        "the breaker to open and the consumer to hold the record",
        Duration::from_secs(15),
        async || {
            let open = matches!(breaker.state(), BreakerState::Open { .. });
            (open && MailerStats::get(&stats.held) >= 1).then_some(())
        },
    )
    .await;
    // A statistics interval wholly inside the cool-down, so that what is fetched from now on is counted.
    let intervals = fetched.get().open_intervals;
    wait_for(
        &mut running,
        "librdkafka's statistics while the breaker cools down",
        Duration::from_secs(10),
        async || (fetched.get().open_intervals > intervals).then_some(()),
    )
    .await;
    // Twenty more orders while the provider is down: a paused consumer fetches none of them.
    let during = order_ids(10..30);
    positions.extend(publish(&topics.requests, &during).await);
    let intervals = fetched.get().open_intervals;
    wait_for(
        &mut running,
        "1.5 s of the cool-down (15 statistics intervals) after the orders",
        Duration::from_secs(15),
        async || (fetched.get().open_intervals >= intervals + 15).then_some(()),
    )
    .await;
    let fetched = fetched.get();
    assert_eq!(
        fetched.while_open, 0,
        "records fetched from {} while the breaker was open and cooling down: {} (pause every assigned partition \
         when a record is held, and resume only once the breaker would let a call through)",
        topics.requests, fetched.while_open
    );

    // Committed: exactly the records whose e-mail went, and not the one held.
    let sent: Vec<String> = provider.emails_per_order().into_keys().collect();
    let expected = committed_after(&positions, &sent);
    wait_for(
        &mut running,
        "the committed offsets to be those of the records sent",
        Duration::from_secs(10),
        async || {
            let now = committed(&group, &topics.requests).await;
            let ahead = now.iter().zip(&expected).any(|(now, sent)| now.unwrap_or(0) > sent.unwrap_or(0));
            assert!(!ahead, "committed {now:?} while only the records before {expected:?} were sent");
            (now == expected).then_some(())
        },
    )
    .await;

    // The provider, while down: the calls that opened the breaker, then only probes, a cool-down apart.
    let recovery = Instant::now();
    let during_outage: Vec<Instant> =
        provider.calls().iter().filter(|c| c.at >= outage && c.at < recovery).map(|c| c.at).collect();
    assert!(!during_outage.is_empty(), "the held order reached the provider");
    for (n, pair) in during_outage.windows(2).enumerate().skip(threshold - 1) {
        assert!(
            pair[1] - pair[0] >= cool_down,
            "call {} of the outage came {:?} after the one before: after the {threshold} failures that open the \
             breaker, only a probe per cool-down ({cool_down:?}) may reach the provider",
            n + 2,
            pair[1] - pair[0]
        );
    }

    // Recovery: everything goes, each once.
    provider.set_mode(Mode::Healthy).await.unwrap();
    let all = order_ids(0..30);
    let expected = committed_after(&positions, &all);
    wait_for(
        &mut running,
        "every record handled and committed after the recovery",
        Duration::from_secs(15),
        async || (committed(&group, &topics.requests).await == expected).then_some(()),
    )
    .await;
    let (held, resumed) = (MailerStats::get(&stats.held), MailerStats::get(&stats.resumed));
    running.stop().await;
    assert!(
        (1..=held).contains(&resumed),
        "the partitions were resumed {resumed} times for {held} records held: once resumed, the consumer is no \
         longer paused (clear `paused`), and only a new hold pauses it again"
    );

    let per_order = provider.emails_per_order();
    let wrong: BTreeMap<&String, usize> =
        all.iter().map(|id| (id, per_order.get(id).copied().unwrap_or(0))).filter(|(_, n)| *n != 1).collect();
    assert!(wrong.is_empty(), "every order gets exactly one e-mail; these did not (order: e-mails): {wrong:?}");
    let dead = kit_testing::committed_records(&topics.dead_letters, 1).await;
    assert!(dead.is_empty(), "an outage sends nothing to the dead-letter topic: {} records there", dead.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_refused_for_good_goes_to_the_dead_letter_topic_once_with_why_and_is_committed() {
    let topics = mail_topics().await;
    let provider = FakeProvider::start().await.expect("a fake provider");
    provider.refuse("order-04", 400, "mailbox unavailable: no such user");
    let group = unique("lesson15-mailer");
    let mailer = Mailer::new(
        broker().consumer_config(&group),
        broker().producer_config(),
        topics.clone(),
        client(&provider.url(), &settings()),
    )
    .expect("a mailer");
    let mut running = Running::start(mailer);
    let (stats, breaker) = (running.stats.clone(), running.breaker.clone());

    let orders = order_ids(0..9);
    let positions = publish(&topics.requests, &orders).await;
    let others: Vec<&String> = orders.iter().filter(|id| *id != "order-04").collect();
    wait_for(&mut running, "the other orders' e-mails", Duration::from_secs(30), async || {
        let refused_calls = provider.calls().iter().filter(|c| c.order_id.as_deref() == Some("order-04")).count();
        assert!(refused_calls <= 1, "the refused e-mail was sent {refused_calls} times: a 400 is tried once");
        let per_order = provider.emails_per_order();
        others.iter().all(|id| per_order.contains_key(*id)).then_some(())
    })
    .await;
    let expected = committed_after(&positions, &orders);
    wait_for(&mut running, "every record committed, the refused one included", Duration::from_secs(10), async || {
        (committed(&group, &topics.requests).await == expected).then_some(())
    })
    .await;
    let held = MailerStats::get(&stats.held);
    let breaker = breaker.state();
    running.stop().await;

    let dead = kit_testing::read_topic(broker(), &topics.dead_letters, 1, Duration::from_secs(15)).await;
    assert_eq!(dead.len(), 1, "one dead letter, once: {dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.key.as_deref(), Some("order-04"), "the original key");
    let original = serde_json::to_string(&order("order-04")).unwrap();
    assert_eq!(letter.payload.as_deref(), Some(original.as_str()), "the original payload, untouched");
    let (partition, offset) = positions["order-04"];
    assert_eq!(letter.headers.get(header::STATUS).map(String::as_str), Some("400"), "{:?}", letter.headers);
    let reason = letter.headers.get(header::REASON).cloned().unwrap_or_default();
    assert!(reason.contains("no such user"), "the reason holds the provider's answer: {reason:?}");
    assert_eq!(letter.headers.get(header::ORIGINAL_TOPIC), Some(&topics.requests));
    assert_eq!(letter.headers.get(header::ORIGINAL_PARTITION), Some(&partition.to_string()));
    assert_eq!(letter.headers.get(header::ORIGINAL_OFFSET), Some(&offset.to_string()));

    let refused_calls = provider.calls().iter().filter(|c| c.order_id.as_deref() == Some("order-04")).count();
    assert_eq!(refused_calls, 1, "a 400 is tried once: never retried, never held and tried again");
    assert_eq!(held, 0, "a refusal is no reason to pause");
    assert_eq!(breaker, BreakerState::Closed { consecutive_failures: 0 }, "nor a failure of the provider");
    let per_order = provider.emails_per_order();
    assert!(others.iter().all(|id| per_order.get(*id) == Some(&1)), "the others, once each: {per_order:?}");
    assert!(!per_order.contains_key("order-04"));
}
