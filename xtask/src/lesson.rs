//! `cargo xtask lesson NN [--solution] [--rabbitmq] [-- ARGS]`: runs a lesson's story against a broker.
//!
//! The broker is, in order: `KAFKA_BOOTSTRAP_SERVERS` if set; a `cargo xtask broker` running on this machine;
//! real Kafka that `cargo xtask kafka --detach` runs on 127.0.0.1:9092; `WORKBOOK_BROKER=kafka|testcontainers`
//! (the story resolves those itself); otherwise the story starts an embedded broker in its own process, as the
//! tests do. A broker found here reaches the lesson binary in `KAFKA_BOOTSTRAP_SERVERS` (plus
//! `WORKBOOK_BROKER_KIND=embedded` for a hosted mock, so clients are tuned for it). This command is no Kafka
//! client itself, so xtask needs no librdkafka to run it (see `relaunch_with_clients` in main.rs).
//!
//! With `--rabbitmq` the same program tells the lesson's RabbitMQ counterpart instead (its `--rabbitmq` flag): no
//! Kafka is looked for, and the program resolves RabbitMQ itself (`kit::rabbitmq`), saying how to start one
//! when none answers.

use std::process::ExitStatus;

use kit::env::{BOOTSTRAP_ENV, HOSTED_KIND_ENV};

use crate::{broker, cargo, catalog};

pub fn run(nn: &str, solution: bool, rabbitmq: bool, args: &[String]) -> anyhow::Result<()> {
    let lesson = catalog::find(nn)?;
    let package = if solution { lesson.solution_package() } else { lesson.exercise_package() };
    println!("lesson {} — {}{}", lesson.number, lesson.meta.title, if solution { " (solution)" } else { "" });

    let mut env: Vec<(&str, String)> = Vec::new();
    let mut args = args.to_vec();
    if rabbitmq {
        let Some(counterpart) = &lesson.meta.rabbitmq else {
            let with: Vec<String> =
                catalog::lessons()?.into_iter().filter(|l| l.meta.rabbitmq.is_some()).map(|l| l.number).collect();
            anyhow::bail!(
                "lesson {} has no RabbitMQ counterpart; these lessons have one: {}",
                lesson.number,
                with.join(", ")
            );
        };
        println!("RabbitMQ counterpart: {counterpart}");
        println!("broker: RabbitMQ (RABBITMQ_URL, else amqp://127.0.0.1:5672)");
        args.insert(0, "--rabbitmq".into());
    } else if let Ok(bootstrap) = std::env::var(BOOTSTRAP_ENV) {
        println!("broker: {bootstrap} (from {BOOTSTRAP_ENV})");
    } else if let Some(running) = broker::running_hosted_broker() {
        println!("broker: embedded, hosted by `cargo xtask broker` at {running}");
        env.push((BOOTSTRAP_ENV, running));
        env.push((HOSTED_KIND_ENV, "embedded".into()));
    } else if let Some(kafka) = kit::jvm_kafka::find_detached(9092) {
        println!(
            "broker: Apache Kafka {} at {}, run by `cargo xtask kafka --detach`",
            kafka.version, kafka.bootstrap_servers
        );
        env.push((BOOTSTRAP_ENV, kafka.bootstrap_servers));
    } else if std::env::var(kit::env::BROKER_ENV).as_deref() == Ok("kafka") {
        println!("broker: Apache Kafka on this machine's JVM (WORKBOOK_BROKER=kafka)");
    } else if std::env::var(kit::env::BROKER_ENV).as_deref() == Ok("testcontainers") {
        println!("broker: a Kafka test container (WORKBOOK_BROKER=testcontainers)");
    } else {
        println!("broker: embedded mock cluster, started by the lesson's program for this run");
    }
    println!();

    let mut command = cargo::cargo();
    // Not `--quiet`: the first run of a lesson compiles it, and cargo's progress says so.
    command.args(["run", "--package", &package, "--"]).args(&args);
    for (key, value) in &env {
        command.env(key, value);
    }
    let status: ExitStatus = command.status()?;
    if !status.success() {
        if !solution {
            eprintln!(
                "\nlesson {nn} stopped. If it panicked at a `todo!()`, that is the exercise waiting for you: see the \
                 TODO in lessons/{dir}/src/, `cargo xtask hint {nn}`, and grade it with `cargo xtask check {nn}`.",
                nn = lesson.number,
                dir = lesson.dir_name
            );
        }
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
