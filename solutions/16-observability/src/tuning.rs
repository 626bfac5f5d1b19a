//! The tuning exercise: a producer that keeps up with a raw librdkafka loop without giving up durability, and a
//! consumer that sees a record within a few milliseconds of its send.
//!
//! Both start from the broker's base config (`kit::Broker::producer_config`, `consumer_config`) and add to it.
//! [`effective`] reads a setting the way librdkafka will apply it, aliases and defaults included.

use rdkafka::ClientConfig;

// EXERCISE: Tune `base` (the broker's producer config: keep all it has) for a service that writes
// orders: throughput within 90 % of a raw librdkafka loop on librdkafka's defaults, and an end-to-end p99 of
// 10 ms or less when traffic is light. Durability is not negotiable: a record is acknowledged only once every
// in-sync replica has it, and a retry must never write a record twice or out of order. Batches must be
// allowed to form, but of the 10 ms budget the producer's share is 2 ms: no record may wait longer than that
// for its batch to fill. A batch may grow to at least 64 KiB of the lab's 512-byte records. Records are
// compressed, with a codec cheap in CPU (gzip is not) that this build of librdkafka has. The tests read the
// settings as librdkafka applies them (aliases and defaults included), make a producer of them and run the
// benchmark with it; `-- --bench` prints the figures.
// ANCHOR: tuned_producer
/// The order service's producer settings.
pub fn tuned_producer(mut base: ClientConfig) -> ClientConfig {
    base.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4");
    base
}
// ANCHOR_END: tuned_producer

// EXERCISE: Tune `base` (the broker's consumer config for a group: keep all it has) for an end-to-end
// p99 of 10 ms or less on loopback: the broker must answer a fetch as soon as it has one record to give, and
// a fetch with nothing to give may wait at most 5 ms — but must wait a little: fetches that never wait keep a
// broker and a core busy for nothing. The tests read the settings as librdkafka applies them, make a consumer
// of them and run the benchmark with it.
// ANCHOR: tuned_consumer
/// The shipping service's consumer settings.
pub fn tuned_consumer(mut base: ClientConfig) -> ClientConfig {
    base.set("fetch.min.bytes", "1").set("fetch.wait.max.ms", "5");
    base
}
// ANCHOR_END: tuned_consumer

// ANCHOR: effective
/// The value of `property` as librdkafka will apply `config`: librdkafka's own reading of it (a
/// `NativeClientConfig`), so an alias counts as its property (`compression.codec` is `compression.type`,
/// `queue.buffering.max.ms` is `linger.ms`) and an unset property has librdkafka's default. Fails when librdkafka
/// refuses the config (a value out of range, a codec this build does not have).
pub fn effective(config: &ClientConfig, property: &str) -> anyhow::Result<String> {
    Ok(config.create_native_config()?.get(property)?)
}

/// The features this build of librdkafka has (`builtin.features`: `gzip`, `snappy`, `lz4`, `zstd`, `ssl`, …).
pub fn builtin_features() -> Vec<String> {
    effective(&ClientConfig::new(), "builtin.features")
        .map(|features| features.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}
// ANCHOR_END: effective
