//! What lesson 12's broker tests share: a whole deployment of the saga's four services on fresh topics, the
//! orders the scenarios place, and independent views of what the services wrote (read from the topics, never from
//! the services' memory).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use kit::read::LogRecord;
use kit_testing::{broker, unique};
use rdkafka::producer::{FutureProducer, FutureRecord};
use solution_12::engine::{Deployment, Running};
use solution_12::inventory::{Inventory, Reservation, Stock};
use solution_12::payment::TestGateway;
use solution_12::services::{
    InventoryService, NotificationService, OrderService, PaymentService, Retry, SagaRecord, SagaTopics, TestMailer,
    Totals,
};
use solution_12::{Command, Item, Notification, PlaceOrder};

/// Fresh topics for one test, created on the broker (changelogs compacted where the broker compacts).
pub async fn saga_topics() -> SagaTopics {
    let name = |what: &str| unique(&format!("lesson12-{what}"));
    let topics = SagaTopics {
        order_requests: name("orders-requests"),
        order_events: name("orders-events"),
        sagas: name("orders-sagas"),
        inventory_commands: name("inventory-commands"),
        inventory_responses: name("inventory-responses"),
        inventory_state: name("inventory-state"),
        payment_commands: name("payments-commands"),
        payment_responses: name("payments-responses"),
        payment_state: name("payments-state"),
        notifications: name("notifications-requests"),
        notification_state: name("notifications-state"),
        notifications_dlq: name("notifications-dlq"),
        dead_letters: name("saga-dlq"),
    };
    kit_testing::create_topics(&topics.all()).await;
    topics
}

/// The stock every scenario starts with: 50 laptops (seed 002's shortage), plenty of the rest.
pub fn initial_stock() -> Inventory {
    Inventory::with_stock(&[("LAPTOP", 50), ("MOUSE", 500), ("DOCK", 100)])
}

pub fn item(sku: &str, quantity: u32, unit_price_cents: u64) -> Item {
    Item { sku: sku.into(), quantity, unit_price_cents }
}

pub fn order(order_id: &str, customer_id: &str, card: &str, items: Vec<Item>) -> PlaceOrder {
    PlaceOrder { order_id: order_id.into(), customer_id: customer_id.into(), card: card.into(), items }
}

pub const GOOD_CARD: &str = "4242-4242-4242-4242";

/// The four services of one deployment, each on a thread of its own.
pub struct System {
    pub topics: SagaTopics,
    pub deployment: Deployment,
    pub order: Option<Running<OrderService>>,
    pub inventory: Option<Running<InventoryService>>,
    pub payment: Option<Running<PaymentService>>,
    pub notification: Option<Running<NotificationService<TestMailer>>>,
    pub mailer: TestMailer,
}

/// How a test's deployment differs from the plain one.
#[derive(Clone)]
pub struct Setup {
    pub step_timeout: Duration,
    pub mailer: TestMailer,
    pub with_payment: bool,
}

impl Default for Setup {
    fn default() -> Self {
        // Long enough that no step of a healthy run times out, even on a loaded machine.
        Setup { step_timeout: Duration::from_secs(30), mailer: TestMailer::default(), with_payment: true }
    }
}

impl System {
    pub async fn start(setup: Setup) -> System {
        let topics = saga_topics().await;
        let deployment = Deployment::on(broker(), unique("lesson12"));
        System::start_on(topics, deployment, setup).await
    }

    /// The services of `deployment` on `topics`.
    pub async fn start_on(topics: SagaTopics, deployment: Deployment, setup: Setup) -> System {
        let mut system = System {
            topics: topics.clone(),
            deployment: deployment.clone(),
            order: Some(Running::start(OrderService::new(topics.clone(), setup.step_timeout), deployment.clone())),
            inventory: Some(Running::start(InventoryService::new(topics.clone(), initial_stock()), deployment.clone())),
            payment: None,
            notification: Some(Running::start(
                NotificationService::new(topics.clone(), setup.mailer.clone(), Retry::default()),
                deployment.clone(),
            )),
            mailer: setup.mailer,
        };
        if setup.with_payment {
            system.start_payment();
        }
        system
    }

    pub fn start_payment(&mut self) {
        let service = PaymentService::new(self.topics.clone(), TestGateway::default());
        self.payment = Some(Running::start(service, self.deployment.clone()));
    }

    /// Sends `orders` to the order service, as clients do.
    pub async fn place(&self, orders: &[PlaceOrder]) {
        let producer: FutureProducer = broker().producer_config().create().expect("a producer");
        for order in orders {
            let payload = serde_json::to_string(order).unwrap();
            let record = FutureRecord::to(&self.topics.order_requests).key(&order.order_id).payload(&payload);
            producer.send(record, Duration::from_secs(10)).await.expect("the order is written");
        }
    }

    /// The sagas as the order service's changelog has them (the latest record per order).
    pub async fn sagas(&self) -> BTreeMap<String, SagaRecord> {
        latest(&self.topics.sagas).await.into_iter().map(|(k, v)| (k, serde_json::from_slice(&v).unwrap())).collect()
    }

    /// Waits until every one of `order_ids` has ended (confirmed or cancelled); their records. Fails at once
    /// when a service stops by itself (an error, or a panic — such as an exercise's `todo!()`), with its reason.
    pub async fn ended(&mut self, order_ids: &[&str], within: Duration) -> BTreeMap<String, SagaRecord> {
        self.until(&format!("every saga of {order_ids:?} ends"), within, |sagas| {
            order_ids.iter().all(|id| sagas.get(*id).is_some_and(|r| r.saga.status.is_terminal()))
        })
        .await
    }

    /// Waits until `done` holds of the sagas in the changelog; the sagas. Fails at once when a service stops by
    /// itself, and after `within` naming `what` did not happen.
    pub async fn until(
        &mut self,
        what: &str,
        within: Duration,
        done: impl Fn(&BTreeMap<String, SagaRecord>) -> bool,
    ) -> BTreeMap<String, SagaRecord> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.check_running();
            let sagas = self.sagas().await;
            if done(&sagas) {
                return sagas;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}; the sagas: {sagas:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails the test with the reason of any service whose run has ended by itself.
    pub fn check_running(&mut self) {
        fn ended<S: solution_12::engine::Stage + Send + 'static>(name: &str, running: &mut Option<Running<S>>) {
            if running.as_ref().is_some_and(|r| r.has_ended()) {
                let (result, _) = running.take().unwrap().stop();
                panic!("the {name} service stopped by itself: {:?}", result.err());
            }
        }
        ended("order", &mut self.order);
        ended("inventory", &mut self.inventory);
        ended("payment", &mut self.payment);
        ended("notification", &mut self.notification);
    }

    /// The stock per SKU as the inventory's changelog has it, over `initial_stock` where it says nothing.
    pub async fn stock(&self) -> BTreeMap<String, Stock> {
        let mut stock = initial_stock().stock;
        for (key, value) in latest(&self.topics.inventory_state).await {
            if let Some(sku) = key.strip_prefix("stock/") {
                stock.insert(sku.to_string(), serde_json::from_slice(&value).unwrap());
            }
        }
        stock
    }

    /// What the inventory recorded per order, from its changelog.
    pub async fn reservations(&self) -> BTreeMap<String, Reservation> {
        latest(&self.topics.inventory_state)
            .await
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("order/")?.to_string(), serde_json::from_slice(&v).unwrap())))
            .collect()
    }

    /// The payment service's money, from its changelog.
    pub async fn totals(&self) -> Totals {
        latest(&self.topics.payment_state)
            .await
            .remove("totals")
            .map(|v| serde_json::from_slice(&v).unwrap())
            .unwrap_or_default()
    }

    /// Every record of `topic`, committed ones only.
    pub async fn records(&self, topic: &str, partitions: i32) -> Vec<LogRecord> {
        committed_records(topic, partitions).await
    }

    /// Writes `command` to its participant's topic, as the order service would.
    pub async fn send_command(&self, command: &Command) {
        let producer: FutureProducer = broker().producer_config().create().expect("a producer");
        let payload = serde_json::to_string(command).unwrap();
        let topic = self.topics.commands_for(command.participant());
        let record = FutureRecord::to(topic).key(command.order_id()).payload(&payload);
        producer.send(record, Duration::from_secs(10)).await.expect("the command is written");
    }

    /// Waits until `topic` holds at least `count` committed records; all of them.
    pub async fn wait_for_records(&mut self, topic: &str, partitions: i32, count: usize) -> Vec<LogRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.check_running();
            let records = committed_records(topic, partitions).await;
            if records.len() >= count {
                return records;
            }
            assert!(tokio::time::Instant::now() < deadline, "{count} records in {topic}: only {}", records.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the mailer has sent at least `count` notifications; what it sent.
    pub async fn wait_for_notifications(&mut self, count: usize) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.check_running();
            let sent = self.mailer.sent.lock().unwrap().clone();
            if sent.len() >= count {
                return sent;
            }
            assert!(tokio::time::Instant::now() < deadline, "{count} notifications sent: only {sent:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The types of the events the order service announced about `order_id`, in order.
    pub async fn event_types(&self, order_id: &str) -> Vec<String> {
        self.records(&self.topics.order_events, 3)
            .await
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(order_id))
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.payload).unwrap()["type"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// The names of the commands sent about `order_id` (both participants' topics), inventory's first.
    pub async fn commands(&self, order_id: &str) -> Vec<String> {
        let mut names = Vec::new();
        for topic in [&self.topics.inventory_commands, &self.topics.payment_commands] {
            for record in self.records(topic, 3).await {
                if record.key.as_deref() == Some(order_id) {
                    let command: Command = serde_json::from_slice(&record.payload).unwrap();
                    names.push(command.kind().to_string());
                }
            }
        }
        names
    }

    /// The headers of the first record of the notifications' dead-letter topic.
    pub async fn dlq_headers(&self) -> BTreeMap<String, String> {
        let topic = self.topics.notifications_dlq.clone();
        let config = {
            let mut config = broker().consumer_config(&unique("lesson12-dlq-reader"));
            config.set("isolation.level", "read_committed");
            config
        };
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            use rdkafka::message::{Headers, Message};
            let consumer: BaseConsumer = config.create().expect("a consumer");
            consumer.subscribe(&[&topic]).expect("subscribe");
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                    let mut headers = BTreeMap::new();
                    if let Some(all) = message.headers() {
                        for header in all.iter() {
                            let value =
                                header.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
                            headers.insert(header.key.to_string(), value);
                        }
                    }
                    return headers;
                }
            }
            panic!("no dead letter in {topic}");
        })
        .await
        .unwrap()
    }

    /// Stops every service that runs; each must stop without an error.
    pub fn stop(&mut self) {
        fn check<S>(name: &str, running: Option<Running<S>>) -> Option<S>
        where
            S: solution_12::engine::Stage + Send + 'static,
        {
            let running = running?;
            let (result, stage) = running.stop();
            result.unwrap_or_else(|e| panic!("the {name} service failed: {e:#}"));
            Some(stage)
        }
        self.check_running();
        check("order", self.order.take());
        check("inventory", self.inventory.take());
        check("payment", self.payment.take());
        check("notification", self.notification.take());
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

/// Every committed record of `topic` (all `partitions`), read to its end.
pub async fn committed_records(topic: &str, partitions: i32) -> Vec<LogRecord> {
    kit_testing::committed_records(topic, partitions).await
}

/// The latest value of each key of a changelog (3 partitions), as compaction would leave it; deleted keys gone.
pub async fn latest(topic: &str) -> BTreeMap<String, Vec<u8>> {
    kit_testing::latest_values(topic, 3).await
}
