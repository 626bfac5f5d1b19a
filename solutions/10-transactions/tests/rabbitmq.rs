//! Grades lesson 10's RabbitMQ counterpart against a real RabbitMQ: `forward_in_tx` (an input's outputs and its
//! acknowledgement in one AMQP transaction: both or neither, through a transform that fails part-way, a publish
//! the broker refuses, and a failed input followed by a good one on the same channel) and `publish_confirmed`
//! (every message confirmed, or an error listing each one refused or returned).
//!
//! Every test declares queues of its own (durable, classic, expiring if left behind) and deletes them at its end.
//! The queues are read with `basic.get`, never with a consumer, and before a test looks at a queue it makes the
//! channel under test answer a request of its own (a barrier, [`barrier`]): RabbitMQ handles a channel's frames
//! in order, so whatever that channel published or acknowledged before has reached its queue by then. Closing a
//! channel is a barrier too, and more: RabbitMQ has returned the channel's unacknowledged messages to their
//! queues (redelivered) before it confirms the close.

use std::time::Duration;

use kit::rabbitmq::{SCRATCH_QUEUE_TTL, delete_queues, test_connection};
use kit::topics::unique;
use kit_testing::wait_until;
use lapin::message::Delivery;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use solution_10::rabbit::{
    LineReserved, Outgoing, PERSISTENT, PublishError, forward_in_tx, publish_confirmed, reserve_lines,
};
use solution_10::{Item, ReserveStock};

/// How long a test waits for a message it expects (it comes within milliseconds).
const WAIT: Duration = Duration::from_secs(10);

/// What the stock service's failure says, in the tests that make it fail.
const STOCK_SERVICE_DOWN: &str = "the stock service did not answer";

/// A test's RabbitMQ: a connection, a channel for the test's own work, and an input and an output queue.
struct Scratch {
    connection: Connection,
    admin: Channel,
    input: String,
    output: String,
}

impl Scratch {
    async fn new() -> Scratch {
        let connection = test_connection().await;
        let admin = connection.create_channel().await.expect("a channel");
        // The test's own publishes are confirmed: an input is in its queue before the test goes on.
        admin.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        let scratch = Scratch { connection, admin, input: unique("l10-requests"), output: unique("l10-reservations") };
        for queue in [&scratch.input, &scratch.output] {
            declare(&scratch.admin, queue, FieldTable::default()).await;
        }
        scratch
    }

    /// A fresh channel, as a consumer opens it: not in transaction mode.
    async fn channel(&self) -> Channel {
        self.connection.create_channel().await.expect("a channel")
    }

    /// Publishes the request of `request` to the input queue, confirmed.
    async fn publish_request(&self, request: &ReserveStock) {
        let payload = serde_json::to_vec(request).unwrap();
        let confirm = self
            .admin
            .basic_publish(
                "".into(),
                self.input.as_str().into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default(),
            )
            .await
            .expect("publish a request");
        assert!(confirm.await.expect("the request's confirm").is_ack(), "RabbitMQ refused the request");
    }

    /// The next input, delivered on `channel` with manual acknowledgement.
    async fn take_input(&self, channel: &Channel, what: &str) -> Delivery {
        wait_until(what, WAIT, || async {
            channel
                .basic_get(self.input.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get on the input queue")
                .map(|message| message.delivery)
        })
        .await
    }

    /// Takes (and acknowledges) everything `queue` holds, in order.
    async fn drain(&self, queue: &str) -> Vec<Delivery> {
        let mut messages = Vec::new();
        while let Some(message) =
            self.admin.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            messages.push(message.delivery);
        }
        messages
    }

    /// What a consumer of the output queue finds there now.
    async fn outputs(&self) -> Vec<Seen> {
        self.drain(&self.output).await.iter().map(Seen::of).collect()
    }

    async fn delete(self, more: &[&str]) {
        let mut queues = vec![self.input.as_str(), self.output.as_str()];
        queues.extend_from_slice(more);
        delete_queues(&self.admin, &queues).await.expect("delete the test's queues");
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// Declares a durable classic queue that deletes itself if a killed test leaves it behind.
async fn declare(channel: &Channel, queue: &str, mut arguments: FieldTable) {
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(SCRATCH_QUEUE_TTL.as_millis() as i64));
    channel
        .queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
        .await
        .expect("declare a queue");
}

/// Makes `channel` answer a request: once it has, RabbitMQ has handled every frame the channel sent before.
async fn barrier(channel: &Channel) {
    channel.basic_qos(0, BasicQosOptions::default()).await.expect("basic.qos as a barrier");
}

/// Closes `channel`: its unacknowledged messages are back in their queues, redelivered, once this returns.
async fn close(channel: &Channel) {
    channel.close(200, "OK".into()).await.expect("close the channel");
}

/// An output as a consumer of the output queue sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Seen {
    order_id: String,
    product_id: String,
    quantity: u32,
    delivery_mode: Option<u8>,
    content_type: Option<String>,
}

impl Seen {
    fn of(delivery: &Delivery) -> Seen {
        let line: LineReserved = serde_json::from_slice(&delivery.data).expect("a LineReserved");
        assert_eq!(line.event, "LINE_RESERVED");
        Seen {
            order_id: line.order_id,
            product_id: line.product_id,
            quantity: line.quantity,
            delivery_mode: *delivery.properties.delivery_mode(),
            content_type: delivery.properties.content_type().as_ref().map(|t| t.to_string()),
        }
    }
}

/// A request for `order_id` with `lines` lines.
fn request(order_id: &str, lines: u32) -> ReserveStock {
    ReserveStock {
        request: "RESERVE".into(),
        order_id: order_id.into(),
        items: (0..lines).map(|n| Item { product_id: format!("SKU-{n}"), quantity: n + 1 }).collect(),
    }
}

/// The transform's outputs for `request`, failing after the first `good` of them: the stock service went away.
fn failing_after(
    request: &ReserveStock,
    queue: &str,
    good: usize,
) -> impl Iterator<Item = anyhow::Result<Outgoing>> + use<> {
    reserve_lines(request, queue).take(good).chain(std::iter::once(Err(anyhow::anyhow!(STOCK_SERVICE_DOWN))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_forward_publishes_every_output_and_settles_the_input() {
    let scratch = Scratch::new().await;
    let order = request("order-1", 3);
    scratch.publish_request(&order).await;
    let channel = scratch.channel().await;
    let input = scratch.take_input(&channel, "the request delivered").await;

    let published =
        forward_in_tx(&channel, &input, reserve_lines(&order, &scratch.output)).await.expect("forward_in_tx");

    assert_eq!(published, 3, "forward_in_tx returns how many outputs it published");
    // Closed: an input still unacknowledged (an ack never committed) would be back in its queue now.
    close(&channel).await;
    let outputs = scratch.outputs().await;
    let input_left = scratch.drain(&scratch.input).await.len();
    assert_eq!(input_left, 0, "the input is still in its queue: its acknowledgement was not committed");
    assert!(
        outputs.iter().all(|o| o.delivery_mode == Some(PERSISTENT)),
        "every output is persistent (delivery mode 2): {outputs:?}"
    );
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("rabbitmq__committed_forward", outputs));
    scratch.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_that_fails_part_way_leaves_nothing_and_the_input_comes_back() {
    let scratch = Scratch::new().await;
    let order = request("order-2", 3);
    scratch.publish_request(&order).await;
    let channel = scratch.channel().await;
    let input = scratch.take_input(&channel, "the request delivered").await;

    let error = forward_in_tx(&channel, &input, failing_after(&order, &scratch.output, 2))
        .await
        .expect_err("the third output is an error: forward_in_tx must fail");

    assert!(format!("{error:#}").contains(STOCK_SERVICE_DOWN), "the error carries its cause: {error:#}");
    barrier(&channel).await;
    assert_eq!(scratch.outputs().await, vec![], "a consumer of the output queue sees outputs of a failed attempt");
    let held = scratch.admin.basic_get(scratch.input.as_str().into(), BasicGetOptions { no_ack: true }).await;
    assert!(
        held.expect("basic.get").is_none(),
        "after a failure the input must stay held by its channel, unacknowledged: it was back in its queue at once"
    );
    // The channel gives its unacknowledged messages back: the input comes again, redelivered.
    channel.basic_recover(BasicRecoverOptions { requeue: true }).await.expect("basic.recover");
    let again =
        scratch.take_input(&channel, "the input back after the failure (was it acknowledged, or rejected?)").await;
    assert!(again.redelivered, "the input comes back marked redelivered");
    let published =
        forward_in_tx(&channel, &again, reserve_lines(&order, &scratch.output)).await.expect("the second attempt");
    assert_eq!(published, 3);
    close(&channel).await;
    let outputs = scratch.outputs().await;
    let input_left = scratch.drain(&scratch.input).await.len();
    assert_eq!(input_left, 0, "after the second attempt the input is settled");
    kit_testing::redact::settings()
        .bind(|| insta::assert_json_snapshot!("rabbitmq__failed_then_forwarded_again", outputs));
    scratch.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_input_leaves_nothing_in_the_next_inputs_commit() {
    let scratch = Scratch::new().await;
    let (first, second) = (request("order-3", 3), request("order-4", 2));
    scratch.publish_request(&first).await;
    scratch.publish_request(&second).await;
    let channel = scratch.channel().await;
    let failing = scratch.take_input(&channel, "the first request delivered").await;
    let next = scratch.take_input(&channel, "the second request delivered").await;

    let failed = forward_in_tx(&channel, &failing, failing_after(&first, &scratch.output, 2)).await;
    let forwarded = forward_in_tx(&channel, &next, reserve_lines(&second, &scratch.output)).await;

    assert!(failed.is_err(), "the first input's transform fails part-way: forward_in_tx must fail");
    assert_eq!(forwarded.expect("the second input is forwarded"), 2);
    close(&channel).await;
    let outputs = scratch.outputs().await;
    let back: Vec<(String, bool)> = scratch
        .drain(&scratch.input)
        .await
        .iter()
        .map(|d| (serde_json::from_slice::<ReserveStock>(&d.data).unwrap().order_id, d.redelivered))
        .collect();
    assert_eq!(
        back,
        vec![("order-3".to_string(), true)],
        "once the channel closed, only the failed input is back in its queue, redelivered"
    );
    kit_testing::redact::settings().bind(|| insta::assert_json_snapshot!("rabbitmq__failed_then_next", outputs));
    scratch.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_broker_refuses_part_way_leaves_nothing() {
    let scratch = Scratch::new().await;
    let order = request("order-5", 3);
    scratch.publish_request(&order).await;
    let channel = scratch.channel().await;
    let input = scratch.take_input(&channel, "the request delivered").await;
    // Two good outputs, then one for an exchange that does not exist: RabbitMQ closes the channel on it.
    let missing = unique("l10-no-such-exchange");
    let outputs = reserve_lines(&order, &scratch.output).take(2).chain([Ok(Outgoing {
        exchange: missing,
        routing_key: "audit".into(),
        payload: b"{}".to_vec(),
    })]);

    let result = forward_in_tx(&channel, &input, outputs).await;

    assert!(result.is_err(), "a publish to an exchange that does not exist fails the attempt: {result:?}");
    let outputs = scratch.outputs().await;
    assert_eq!(outputs, vec![], "the outputs published before the refused one are visible");
    let other = scratch.channel().await;
    let again = scratch.take_input(&other, "the input back once RabbitMQ closed the channel").await;
    assert!(again.redelivered, "the input comes back marked redelivered");
    scratch.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_message_is_in_its_queue() {
    let scratch = Scratch::new().await;
    let channel = scratch.channel().await;
    let messages: Vec<Outgoing> = (0..50).map(|n| Outgoing::to_queue(&scratch.output, format!("{n}"))).collect();

    publish_confirmed(&channel, &messages).await.expect("publish_confirmed");

    let taken = scratch.drain(&scratch.output).await;
    let payloads: Vec<String> = taken.iter().map(|d| String::from_utf8_lossy(&d.data).into_owned()).collect();
    let expected: Vec<String> = (0..50).map(|n| n.to_string()).collect();
    assert_eq!(payloads, expected, "every message in its queue, in order, once");
    assert!(
        taken.iter().all(|d| *d.properties.delivery_mode() == Some(PERSISTENT)),
        "every message is persistent (delivery mode 2)"
    );
    scratch.delete(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_broker_refuses_are_reported_each() {
    let scratch = Scratch::new().await;
    let channel = scratch.channel().await;
    // A queue that holds two messages and refuses (nacks) every publish beyond them.
    let full = unique("l10-two-at-most");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(2));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    declare(&scratch.admin, &full, arguments).await;
    let messages: Vec<Outgoing> = (0..5).map(|n| Outgoing::to_queue(&full, format!("{n}"))).collect();

    let result = publish_confirmed(&channel, &messages).await;

    let kept = scratch.drain(&full).await.len();
    match result {
        Err(PublishError::NotConfirmed { refused, returned }) => {
            assert_eq!((refused, returned), (vec![2, 3, 4], vec![]), "the three messages beyond the queue's length");
        }
        other => panic!("the queue refused three messages: expected NotConfirmed, got {other:?}"),
    }
    assert_eq!(kept, 2);
    scratch.delete(&[&full]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_come_back_and_are_reported() {
    let scratch = Scratch::new().await;
    let channel = scratch.channel().await;
    // The default exchange routes a message to the queue its routing key names: no such queue, no route.
    let nowhere = unique("l10-no-such-queue");
    let messages = vec![
        Outgoing::to_queue(&scratch.output, "0"),
        Outgoing::to_queue(&nowhere, "1"),
        Outgoing::to_queue(&scratch.output, "2"),
        Outgoing::to_queue(&nowhere, "3"),
    ];

    let result = publish_confirmed(&channel, &messages).await;

    let kept = scratch.drain(&scratch.output).await.len();
    match result {
        Err(PublishError::NotConfirmed { refused, returned }) => {
            assert_eq!((refused, returned), (vec![], vec![1, 3]), "the two messages no queue takes");
        }
        other => panic!("two messages are routed nowhere: expected NotConfirmed, got {other:?}"),
    }
    assert_eq!(kept, 2);
    scratch.delete(&[]).await;
}
