//! Real Apache Kafka on this machine's JVM, without Docker: `cargo xtask kafka` and `WORKBOOK_BROKER=kafka`.
//!
//! # How it runs Kafka
//!
//! Apache Kafka's broker is a set of jars on Maven Central. [`classpath`] asks Maven to resolve them from the
//! small pom in `kit/kafka/pom.xml` (pinned version, overridable) into the local Maven repository, and caches the
//! resulting classpath under [`crate::machine_dir`] — outside the clone, so every clone and every later run
//! reuse it, offline.
//! [`JvmCluster::start`] then writes one `server.properties` per node, formats each node's storage (KRaft: no
//! ZooKeeper), starts one `java … kafka.Kafka` process per node and waits until the cluster answers a Metadata
//! request listing every broker.
//!
//! # Shapes
//!
//! - One broker: a single process that is both broker and controller, as `docker-compose.yml` runs it, with the
//!   single-broker settings of [`single_broker_settings`] (internal topics with one replica).
//! - N brokers: N broker processes on consecutive ports plus one process that is only the controller (the
//!   metadata quorum). The quorum is kept apart on purpose: with three combined nodes, stopping two of them loses
//!   the quorum's majority, and then the survivor cannot even shrink a partition's in-sync replicas, so a write
//!   hangs instead of failing with `NOT_ENOUGH_REPLICAS` — the lesson a broker outage should teach.
//!   Replication factor 3 and `min.insync.replicas=2` by default ([`cluster_settings`]).
//!
//! # Lifetimes
//!
//! Every JVM runs in a process group of its own, so a Ctrl-C in the terminal reaches only the program that owns
//! it, which stops its nodes in order (brokers, then the controller) and deletes their data. A *detached* cluster
//! ([`JvmCluster::detach`]) outlives its starter: its nodes' pids are written to `cluster.json` in its directory,
//! where [`stop_detached`] finds them. A *private* cluster (tests, on free ports) dies with its test process even
//! when that process is killed: its JVMs are spawned by one long-lived thread with `PR_SET_PDEATHSIG`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The Apache Kafka version the workbook runs (the same as `docker-compose.yml` and the test containers).
pub const KAFKA_VERSION: &str = crate::containers::KAFKA_TAG;
/// The pom Maven resolves the broker's jars from.
const POM: &str = include_str!("../kafka/pom.xml");
/// Heap per broker: three brokers and a controller fit a 2-core, 24 GiB machine with room for the builds.
pub const BROKER_HEAP_MB: u32 = 512;
/// A controller keeps only metadata.
const CONTROLLER_HEAP_MB: u32 = 256;
/// The lowest Java that runs a Kafka 4 broker.
const MIN_JAVA: u32 = 17;
/// Controller listeners sit this far above the client ports (9092 → 10092), out of the brokers' range.
const CONTROLLER_PORT_OFFSET: u16 = 1000;
/// Node ids: brokers are 1..=N; a dedicated controller takes this one.
const CONTROLLER_ID: u32 = 100;
/// How long a cluster may take to answer after its JVMs start (a cold JVM on a busy machine is slow).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node may take to stop after SIGTERM before it is killed. Short on purpose: a stopped cluster's data
/// is deleted, so a clean shutdown saves nothing, and brokers that all shut down at once each wait in vain for
/// another to take over their partitions.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to get Java and Maven, for the message a machine without them gets.
pub const HOW_TO_INSTALL: &str = "Real Kafka without Docker needs a JDK 17 or newer (`java`) and Maven (`mvn`): \
     on Debian or Ubuntu `sudo apt-get install openjdk-17-jdk-headless maven`, on macOS `brew install openjdk@17 \
     maven`, elsewhere https://adoptium.net and https://maven.apache.org. Alternatives: `cargo xtask up` runs Kafka \
     in Docker, and the embedded broker (leave KAFKA_BOOTSTRAP_SERVERS and WORKBOOK_BROKER unset) needs nothing.";

// ANCHOR: settings
/// Broker settings for a single broker, shared with `docker-compose.yml` (a test in xtask holds them equal).
pub fn single_broker_settings() -> Vec<(&'static str, String)> {
    common_settings(1, 1)
}

/// Broker settings for a cluster of `brokers` (≥ 3 gives the production-like replication the lessons teach).
pub fn cluster_settings(brokers: u16) -> Vec<(&'static str, String)> {
    let replicas = brokers.min(3);
    common_settings(replicas, if replicas >= 3 { 2 } else { 1 })
}

fn common_settings(replicas: u16, min_isr: u16) -> Vec<(&'static str, String)> {
    vec![
        // Consumer groups (__consumer_offsets) and transactions (__transaction_state) need their internal
        // topics; by default they want three replicas, which one broker cannot hold.
        ("offsets.topic.replication.factor", replicas.to_string()),
        ("transaction.state.log.replication.factor", replicas.to_string()),
        ("transaction.state.log.min.isr", min_isr.to_string()),
        ("default.replication.factor", replicas.to_string()),
        // With acks=all, a write needs this many in-sync copies or fails with NOT_ENOUGH_REPLICAS.
        ("min.insync.replicas", min_isr.to_string()),
        // A group's first rebalance starts at once instead of waiting 3 s for more members.
        ("group.initial.rebalance.delay.ms", "0".into()),
        ("num.partitions", "3".into()),
        // The log cleaner looks for compactable logs every second instead of every 15 s, so that a compacted
        // topic (lesson 11's snapshots) shows compaction while a learner watches.
        ("log.cleaner.backoff.ms", "1000".into()),
        // The workbook creates its topics explicitly: a typo in a topic name is an error, not a new topic.
        ("auto.create.topics.enable", "false".into()),
    ]
}
// ANCHOR_END: settings

/// Settings only a multi-broker cluster gets: a dead broker is noticed in 3 s instead of 9 s, so an outage shows
/// up (and is survived) within a lesson's patience.
const FAST_FAILOVER: &[(&str, &str)] =
    &[("broker.session.timeout.ms", "3000"), ("broker.heartbeat.interval.ms", "500")];

/// What a cluster looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub version: String,
    pub brokers: u16,
    /// The first broker's client port; the others follow (9092, 9093, 9094). `None`: free ports, for tests.
    pub port: Option<u16>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { version: KAFKA_VERSION.to_string(), brokers: 1, port: Some(9092) }
    }
}

/// Steps of a start, for progress displays.
pub type Progress<'a> = &'a dyn Fn(&str);

/// Fails with [`HOW_TO_INSTALL`] unless `java` (17+) and `mvn` are on the PATH.
pub fn check_tools() -> anyhow::Result<()> {
    let major = java_major().with_context(|| format!("no usable `java`. {HOW_TO_INSTALL}"))?;
    if major < MIN_JAVA {
        bail!(
            "`java` is Java {major}; Kafka {KAFKA_VERSION}'s broker needs Java {MIN_JAVA} or newer. {HOW_TO_INSTALL}"
        );
    }
    Ok(())
}

/// Whether this machine can run Kafka on the JVM (Java 17+; Maven, or jars resolved before).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE
        .get_or_init(|| check_tools().is_ok() && (cached_classpath(KAFKA_VERSION).is_some() || which("mvn").is_some()))
}

fn java_major() -> anyhow::Result<u32> {
    let output = Command::new("java").arg("-version").stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&output.stderr);
    parse_java_major(&text).with_context(|| format!("could not read the version from `java -version`: {text}"))
}

/// `openjdk version "17.0.15" 2025-04-15` → 17; `java version "1.8.0_392"` → 8.
fn parse_java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '_', '-', '+']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 { parts.next()?.parse().ok() } else { Some(first) }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

fn cached_classpath(version: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(crate::machine_dir().join(format!("kafka-{version}")).join("classpath.txt")).ok()?;
    let text = text.trim().to_string();
    let complete = !text.is_empty() && text.split(':').all(|jar| Path::new(jar).is_file());
    complete.then_some(text)
}

/// The broker's classpath for `version`: cached, or resolved once with Maven (the first time downloads about
/// 60 MB into `~/.m2`; later runs need no network).
pub fn classpath(version: &str, progress: Progress) -> anyhow::Result<String> {
    if let Some(cached) = cached_classpath(version) {
        return Ok(cached);
    }
    if which("mvn").is_none() {
        bail!("no `mvn` to fetch Apache Kafka {version}'s jars with. {HOW_TO_INSTALL}");
    }
    let dir = crate::machine_dir().join(format!("kafka-{version}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pom = dir.join("pom.xml");
    std::fs::write(&pom, POM)?;
    let partial = dir.join("classpath.txt.partial");
    progress(&format!(
        "resolving Apache Kafka {version}'s jars with Maven (the first time downloads about 60 MB into ~/.m2)"
    ));
    let output = Command::new("mvn")
        .args(["--batch-mode", "--quiet", "--no-transfer-progress", "--file"])
        .arg(&pom)
        .arg(format!("-Dkafka.version={version}"))
        .arg("dependency:build-classpath")
        .arg(format!("-Dmdep.outputFile={}", partial.display()))
        .stdin(Stdio::null())
        .output()
        .context("running mvn")?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stdout);
        let errors: Vec<_> = text.lines().filter(|l| l.contains("ERROR")).take(8).collect();
        bail!(
            "Maven could not resolve org.apache.kafka:kafka_2.13:{version}:\n{}\n\
             Check that the version exists (4.0.0 and later run on the JVM this way) and that Maven Central is \
             reachable; a version resolved once is reused offline.",
            errors.join("\n")
        );
    }
    std::fs::rename(&partial, dir.join("classpath.txt"))?;
    cached_classpath(version).context("Maven wrote a classpath with missing jars")
}

/// One JVM of a cluster.
#[derive(Debug)]
struct Node {
    id: u32,
    /// The client listener; `None` for the dedicated controller.
    client_port: Option<u16>,
    controller_port: u16,
    dir: PathBuf,
    heap_mb: u32,
    process: Option<Running>,
}

#[derive(Debug)]
enum Running {
    /// Started by this process.
    Child(Child),
    /// Started by another process (a detached cluster found again): only its pid is known.
    Pid(u32),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Child(child) => child.id(),
            Running::Pid(pid) => *pid,
        }
    }

    fn alive(&mut self) -> bool {
        match self {
            Running::Child(child) => matches!(child.try_wait(), Ok(None)),
            Running::Pid(pid) => pid_alive(*pid),
        }
    }
}

#[cfg(unix)]
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0;
    // On Linux a zombie (exited, not yet reaped) still exists; its state letter in /proc is Z.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
    exists && !zombie
}

/// A running Kafka cluster on this machine's JVM. Dropping it stops every node and deletes its data, unless it
/// was [detached](JvmCluster::detach).
#[derive(Debug)]
pub struct JvmCluster {
    spec: Spec,
    dir: PathBuf,
    classpath: String,
    nodes: Vec<Node>,
    /// Private clusters' JVMs die with this process (see the module docs).
    private: bool,
    detached: bool,
}

impl JvmCluster {
    /// Resolves, configures, formats and starts the cluster described by `spec`, and waits until it answers.
    pub fn start(spec: &Spec, progress: Progress) -> anyhow::Result<JvmCluster> {
        check_tools()?;
        anyhow::ensure!(spec.brokers >= 1, "a cluster needs at least one broker");
        let classpath = classpath(&spec.version, progress)?;
        let private = spec.port.is_none();
        let (dir, client_ports, controller_ports) = match spec.port {
            Some(port) => {
                let last = port as u32 + spec.brokers as u32 - 1 + CONTROLLER_PORT_OFFSET as u32;
                anyhow::ensure!(last <= u16::MAX as u32, "port {port} leaves no room for the controller's port");
                let clients: Vec<u16> = (0..spec.brokers).map(|i| port + i).collect();
                // One controller listener either way: the combined node's, or the dedicated controller's.
                (cluster_dir(port), clients, vec![port + CONTROLLER_PORT_OFFSET])
            }
            None => {
                let free = free_ports(spec.brokers as usize + 1)?;
                let dir =
                    crate::machine_dir().join("clusters").join(format!("private-{}-{}", std::process::id(), free[0]));
                (dir, free[1..].to_vec(), vec![free[0]])
            }
        };
        for port in client_ports.iter().chain(&controller_ports) {
            ensure_port_free(*port)?;
        }
        if dir.exists() {
            // Left by a run that was killed: its processes are gone (the ports are free), so is its data's use.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        let mut nodes = Vec::new();
        if spec.brokers == 1 {
            nodes.push(Node {
                id: 1,
                client_port: Some(client_ports[0]),
                controller_port: controller_ports[0],
                dir: dir.join("node-1"),
                heap_mb: BROKER_HEAP_MB,
                process: None,
            });
        } else {
            nodes.push(Node {
                id: CONTROLLER_ID,
                client_port: None,
                controller_port: controller_ports[0],
                dir: dir.join("controller"),
                heap_mb: CONTROLLER_HEAP_MB,
                process: None,
            });
            for (i, port) in client_ports.iter().enumerate() {
                nodes.push(Node {
                    id: i as u32 + 1,
                    client_port: Some(*port),
                    controller_port: 0,
                    dir: dir.join(format!("broker-{}", i + 1)),
                    heap_mb: BROKER_HEAP_MB,
                    process: None,
                });
            }
        }
        let mut cluster = JvmCluster { spec: spec.clone(), dir, classpath, nodes, private, detached: false };
        cluster.write_configs()?;
        progress(&format!("formatting the storage of {} node(s) (KRaft)", cluster.nodes.len()));
        cluster.format()?;
        progress(&format!("starting {} JVM(s)", cluster.nodes.len()));
        for index in 0..cluster.nodes.len() {
            cluster.spawn(index)?;
        }
        progress(&format!("waiting until {} broker(s) answer a Metadata request", spec.brokers));
        cluster.wait_ready(READY_TIMEOUT)?;
        Ok(cluster)
    }

    /// `host:port,…` of every broker.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes.iter().filter_map(|n| n.client_port).map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// The folder with the nodes' configs, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Each node's log file, labelled.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        self.nodes.iter().map(|n| (node_label(n), n.dir.join("server.log"))).collect()
    }

    /// Each running node's process id, labelled like [`JvmCluster::logs`]: what `kill -9` needs to crash one.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.nodes.iter().filter_map(|n| n.process.as_ref().map(|p| (node_label(n), p.pid()))).collect()
    }

    /// Broker ids (1..=N).
    pub fn broker_ids(&self) -> Vec<u32> {
        self.nodes.iter().filter(|n| n.client_port.is_some()).map(|n| n.id).collect()
    }

    /// Kills broker `id` at once (SIGKILL: a crash, not a clean shutdown). Its data stays for [`start_broker`].
    ///
    /// [`start_broker`]: JvmCluster::start_broker
    pub fn kill_broker(&mut self, id: u32) -> anyhow::Result<()> {
        let node = self.broker_mut(id)?;
        if let Some(mut process) = node.process.take() {
            signal(process.pid(), libc::SIGKILL);
            reap(&mut process, Instant::now() + STOP_TIMEOUT);
        }
        Ok(())
    }

    /// Starts broker `id` again on its data and waits until the cluster lists it again.
    pub fn start_broker(&mut self, id: u32) -> anyhow::Result<()> {
        let index = self.nodes.iter().position(|n| n.id == id && n.client_port.is_some());
        let index = index.with_context(|| format!("no broker {id}"))?;
        anyhow::ensure!(self.nodes[index].process.is_none(), "broker {id} is running");
        self.spawn(index)?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Leaves the cluster running after this value is gone, recorded for [`find_detached`] and [`stop_detached`].
    pub fn detach(mut self) -> anyhow::Result<Detached> {
        anyhow::ensure!(!self.private, "a private cluster cannot be detached");
        let detached = Detached {
            version: self.spec.version.clone(),
            brokers: self.spec.brokers,
            bootstrap_servers: self.bootstrap_servers(),
            pids: self.nodes.iter().filter_map(|n| n.process.as_ref().map(Running::pid)).collect(),
            dir: self.dir.clone(),
            logs: self.logs().into_iter().map(|(_, p)| p).collect(),
        };
        std::fs::write(self.dir.join("cluster.json"), serde_json::to_string_pretty(&detached)?)?;
        self.detached = true;
        Ok(detached)
    }

    /// Stops every node (brokers first, then the controller, so brokers can shut down cleanly) and deletes the
    /// cluster's folder.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_all();
        Ok(())
    }

    /// Whether every node is still running; the first one that is not, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            if let Some(process) = &mut node.process
                && !process.alive()
            {
                bail!("{} exited; the end of its log:\n{}", node_label(node), tail_of_logs(&node.dir, 15));
            }
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        let order: Vec<usize> = {
            let mut brokers_first: Vec<usize> = (0..self.nodes.len()).collect();
            brokers_first.sort_by_key(|&i| self.nodes[i].client_port.is_none());
            brokers_first
        };
        let mut processes: Vec<Running> = order.iter().filter_map(|&i| self.nodes[i].process.take()).collect();
        terminate(&mut processes);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn broker_mut(&mut self, id: u32) -> anyhow::Result<&mut Node> {
        self.nodes.iter_mut().find(|n| n.id == id && n.client_port.is_some()).with_context(|| format!("no broker {id}"))
    }

    fn voters(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| self.spec.brokers == 1 || n.client_port.is_none())
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn write_configs(&self) -> anyhow::Result<()> {
        let voters = self.voters();
        let settings =
            if self.spec.brokers == 1 { single_broker_settings() } else { cluster_settings(self.spec.brokers) };
        for node in &self.nodes {
            std::fs::create_dir_all(&node.dir).with_context(|| format!("creating {}", node.dir.display()))?;
            let mut lines = vec![
                format!("node.id={}", node.id),
                format!("controller.quorum.voters={voters}"),
                "controller.listener.names=CONTROLLER".into(),
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
                format!("log.dirs={}", node.dir.join("data").display()),
            ];
            match node.client_port {
                Some(port) if self.spec.brokers == 1 => lines.extend([
                    "process.roles=broker,controller".into(),
                    format!("listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{}", node.controller_port),
                    format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port}"),
                    "inter.broker.listener.name=PLAINTEXT".into(),
                ]),
                Some(port) => lines.extend([
                    "process.roles=broker".into(),
                    format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
                    format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port}"),
                    "inter.broker.listener.name=PLAINTEXT".into(),
                ]),
                None => lines.extend([
                    "process.roles=controller".into(),
                    format!("listeners=CONTROLLER://127.0.0.1:{}", node.controller_port),
                ]),
            }
            // Every node, the controller too: in KRaft the controller creates topics, so it is its defaults
            // (replication factor, partitions) and its min.insync.replicas that new topics and ISR changes follow.
            lines.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
            if self.spec.brokers > 1 {
                lines.extend(FAST_FAILOVER.iter().map(|(k, v)| format!("{k}={v}")));
            }
            let config = format!(
                "# Written by the workbook (kit/src/jvm_kafka.rs) for {}; deleted when the cluster stops.\n{}\n",
                node_label(node),
                lines.join("\n")
            );
            std::fs::write(node.dir.join("server.properties"), config)?;
            std::fs::write(node.dir.join("log4j2.properties"), log4j_config(&node.dir.join("server.log")))?;
        }
        Ok(())
    }

    /// `kafka-storage format` on every node, in parallel, with one cluster id.
    fn format(&self) -> anyhow::Result<()> {
        let cluster_id = random_cluster_id();
        let mut children = Vec::new();
        for node in &self.nodes {
            let child = Command::new("java")
                // A short-lived tool: the quick JIT tier starts faster.
                .args(["-Xmx256m", "-XX:TieredStopAtLevel=1"])
                .arg(format!("-Dlog4j2.configurationFile={}", node.dir.join("log4j2.properties").display()))
                .args(["-cp", &self.classpath, "kafka.tools.StorageTool"])
                .args(["format", "--ignore-formatted", "--cluster-id", &cluster_id, "--config"])
                .arg(node.dir.join("server.properties"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting java for kafka-storage format")?;
            children.push((node_label(node), child));
        }
        for (label, child) in children {
            let output = child.wait_with_output()?;
            if !output.status.success() {
                bail!(
                    "formatting the storage of {label} failed:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        Ok(())
    }

    fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let stdout = std::fs::File::create(node.dir.join("stdout.log"))?;
        let mut command = Command::new("java");
        command
            .arg(format!("-Xms{0}m", node.heap_mb))
            .arg(format!("-Xmx{0}m", node.heap_mb))
            .args(["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError"])
            .arg("-Djava.awt.headless=true")
            .arg(format!("-Dlog4j2.configurationFile={}", node.dir.join("log4j2.properties").display()))
            .arg(format!("-Dkafka.logs.dir={}", node.dir.display()))
            .args(["-cp", &self.classpath, "kafka.Kafka"])
            .arg(node.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(stdout.try_clone()?)
            .stderr(stdout);
        let child = if self.private { spawn_tied_to_this_process(command)? } else { spawn_in_own_group(command)? };
        self.nodes[index].process = Some(Running::Child(child));
        Ok(())
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let expected = self.spec.brokers as usize;
        let mut last: String;
        loop {
            self.check_alive()?;
            // A plain Metadata round trip (kit::wire), not a librdkafka client: nothing to set up or tear down,
            // and this module builds without rdkafka.
            match crate::wire::metadata_brokers(&self.bootstrap_servers(), Duration::from_secs(2)) {
                Ok(brokers) if brokers.len() >= expected => return Ok(()),
                Ok(brokers) => last = format!("{} of {expected} brokers registered", brokers.len()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!(
                    "Kafka did not answer at {} within {within:?} ({last}); the end of its log:\n{}",
                    self.bootstrap_servers(),
                    tail_of_logs(&self.nodes[0].dir, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(200)); // polling interval of a deadline-bound wait
        }
    }
}

impl Drop for JvmCluster {
    fn drop(&mut self) {
        if !self.detached {
            self.stop_all();
        }
    }
}

fn node_label(node: &Node) -> String {
    match node.client_port {
        Some(port) => format!("broker {} (127.0.0.1:{port})", node.id),
        None => format!("controller (127.0.0.1:{})", node.controller_port),
    }
}

fn log4j_config(file: &Path) -> String {
    format!(
        "# Kafka's own logs go to one file per node; the terminal stays for the workbook's messages.\n\
         status = warn\n\
         appender.file.type = File\n\
         appender.file.name = file\n\
         appender.file.fileName = {}\n\
         appender.file.layout.type = PatternLayout\n\
         appender.file.layout.pattern = [%d] %p %m (%c)%n\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.file.ref = file\n\
         logger.state.name = state.change.logger\n\
         logger.state.level = WARN\n",
        file.display()
    )
}

/// The last `lines` lines of a node's server log (or of its stdout, where the JVM reports a failed start).
fn tail_of_logs(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    for name in ["stdout.log", "server.log"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        let all: Vec<_> = text.lines().collect();
        if all.is_empty() {
            continue;
        }
        out.push_str(&format!("  == {}\n", dir.join(name).display()));
        for line in &all[all.len().saturating_sub(lines)..] {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding (22 characters), as
/// `kafka-storage random-uuid` prints. Like Kafka's own `Uuid.randomUuid`, it never starts with `-`: the
/// command-line tools would read such an id as an option (`--cluster-id -x…` fails with "expected one argument"),
/// which made one private cluster start in 64 fail.
fn random_cluster_id() -> String {
    loop {
        let id = encode_cluster_id(uuid::Uuid::new_v4().into_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encode_cluster_id(bytes: [u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `count` ports the OS says are free now.
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

/// Fails with the port and, when this machine can tell, the program listening on it.
fn ensure_port_free(port: u16) -> anyhow::Result<()> {
    if TcpListener::bind(("127.0.0.1", port)).is_ok() {
        return Ok(());
    }
    let who = who_listens(port);
    if let Some((pid, _)) =
        who.as_ref().filter(|(pid, _)| jvms_using(&crate::machine_dir().join("clusters")).contains(pid))
    {
        bail!(
            "port {port} on 127.0.0.1 is taken by a Kafka the workbook started earlier (pid {pid}); \
             `cargo xtask kafka --stop` (with `--port` if it was moved) stops it"
        );
    }
    let by = who.map(|(pid, command)| format!(" by pid {pid} ({command})")).unwrap_or_default();
    bail!(
        "port {port} on 127.0.0.1 is taken{by}. Stop that program, or move Kafka with `--port` \
         (a cluster started with `cargo xtask kafka --detach` stops with `cargo xtask kafka --stop`)"
    )
}

/// The pid and command line of the process listening on TCP `port`, read from /proc (Linux only).
fn who_listens(port: u16) -> Option<(u32, String)> {
    let hex = format!(":{port:04X}");
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|table| {
        std::fs::read_to_string(table).ok()?.lines().skip(1).find_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            (fields.get(1)?.ends_with(&hex) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|s| s.to_string()))?
        })
    })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let mut command: String =
                String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().chars().take(100).collect();
            if command.len() >= 100 {
                command.push('…');
            }
            return Some((pid, command));
        }
    }
    None
}

#[cfg(unix)]
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid this module started; at worst the process is already gone (ESRCH).
    unsafe { libc::kill(pid as i32, signal) };
}

/// SIGTERM to every process in order, then waits for them all, killing those still running after
/// [`STOP_TIMEOUT`] (one deadline for all of them).
fn terminate(processes: &mut [Running]) {
    for process in processes.iter() {
        signal(process.pid(), libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for process in processes.iter_mut() {
        reap(process, deadline);
    }
}

/// Waits for `process` to end, killing it if it is still running at `deadline`.
fn reap(process: &mut Running, deadline: Instant) {
    while process.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50)); // polling interval of a deadline-bound wait
    }
    if process.alive() {
        signal(process.pid(), libc::SIGKILL);
    }
    if let Running::Child(child) = process {
        let _ = child.wait();
    } else {
        let gone = Instant::now() + Duration::from_secs(5);
        while process.alive() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(50)); // polling interval of a deadline-bound wait
        }
    }
}

fn spawn_in_own_group(mut command: Command) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    command.spawn().context("starting java")
}

/// Spawns `command` so that it gets SIGKILL when this process dies, however it dies. `PR_SET_PDEATHSIG` fires
/// when the spawning *thread* ends, so every such child is spawned by one thread that lives as long as the
/// process.
fn spawn_tied_to_this_process(command: Command) -> anyhow::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("jvm-kafka-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    command.process_group(0);
                    // Linux only; elsewhere the cluster's Drop (and `cargo xtask kafka --stop`) must do.
                    #[cfg(target_os = "linux")]
                    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
                    unsafe {
                        let parent = libc::getpid();
                        command.pre_exec(move || {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            if libc::getppid() != parent {
                                libc::_exit(1); // the parent died before prctl took effect
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("a thread to spawn the JVMs");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.lock().unwrap_or_else(|e| e.into_inner()).send((command, reply_tx)).context("the JVM spawner")?;
    reply_rx.recv().context("the JVM spawner")?.context("starting java")
}

/// What `cluster.json` records of a detached cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Detached {
    pub version: String,
    pub brokers: u16,
    pub bootstrap_servers: String,
    pub pids: Vec<u32>,
    pub dir: PathBuf,
    pub logs: Vec<PathBuf>,
}

fn cluster_dir(port: u16) -> PathBuf {
    crate::machine_dir().join("clusters").join(port.to_string())
}

/// The detached cluster whose first broker listens on `port`, if its processes are still running.
pub fn find_detached(port: u16) -> Option<Detached> {
    let text = std::fs::read_to_string(cluster_dir(port).join("cluster.json")).ok()?;
    let detached: Detached = serde_json::from_str(&text).ok()?;
    detached.pids.iter().all(|pid| pid_alive(*pid)).then_some(detached)
}

/// Stops the detached cluster on `port` (and any JVM still running from its folder) and deletes its data.
/// Returns whether there was anything to stop.
pub fn stop_detached(port: u16) -> anyhow::Result<bool> {
    let dir = cluster_dir(port);
    let mut pids: Vec<u32> = std::fs::read_to_string(dir.join("cluster.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Detached>(&text).ok())
        .map(|d| d.pids)
        .unwrap_or_default();
    // A foreground run that was killed leaves no cluster.json: find its JVMs by the folder in their arguments.
    let strays: Vec<u32> = jvms_using(&dir).into_iter().filter(|p| !pids.contains(p)).collect();
    pids.extend(strays);
    pids.retain(|pid| pid_alive(*pid));
    // Brokers before the controller: the last pid recorded is a broker's, the controller's is first.
    let mut processes: Vec<Running> = pids.iter().rev().map(|pid| Running::Pid(*pid)).collect();
    terminate(&mut processes);
    let existed = dir.exists();
    if existed {
        std::fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))?;
    }
    Ok(existed || !pids.is_empty())
}

/// Pids of the java processes whose command line names `dir`.
fn jvms_using(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = String::from_utf8_lossy(&std::fs::read(entry.path().join("cmdline")).ok()?).into_owned();
            (cmdline.contains("kafka.Kafka") && cmdline.contains(&format!("{needle}/"))).then_some(pid)
        })
        .collect()
}

/// The single-broker cluster on `port` that `cargo xtask kafka --detach` runs, started (detached) if none is
/// running: what `WORKBOOK_BROKER=kafka` uses. A lock file keeps parallel test binaries from starting two.
pub fn ensure_detached(port: u16, progress: Progress) -> anyhow::Result<Detached> {
    if let Some(running) = find_detached(port) {
        return Ok(running);
    }
    let clusters = crate::machine_dir().join("clusters");
    std::fs::create_dir_all(&clusters)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(clusters.join(format!("{port}.lock")))?;
    // SAFETY: flock on a file descriptor this function owns; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("could not lock {}", clusters.join(format!("{port}.lock")).display());
    }
    if let Some(running) = find_detached(port) {
        return Ok(running); // another process started it while we waited for the lock
    }
    let spec = Spec { port: Some(port), ..Spec::default() };
    let detached = JvmCluster::start(&spec, progress)?.detach()?;
    drop(lock);
    Ok(detached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_are_read_in_both_styles() {
        assert_eq!(parse_java_major("openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime"), Some(17));
        assert_eq!(parse_java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(parse_java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(parse_java_major("nothing here"), None);
    }

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = random_cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{id}");
        assert_ne!(id, random_cluster_id());
    }

    #[test]
    fn no_cluster_id_starts_with_a_dash() {
        // 0xF8 in the first byte encodes as `-` (62) first: the id that made `kafka-storage format` fail.
        let mut bytes = [0u8; 16];
        bytes[0] = 0xF8;
        assert!(encode_cluster_id(bytes).starts_with('-'), "the encoding can start with a dash");
        assert!((0..5_000).map(|_| random_cluster_id()).all(|id| !id.starts_with('-')));
    }

    #[test]
    fn a_cluster_of_three_replicates_three_times_and_needs_two_in_sync() {
        let settings: std::collections::BTreeMap<_, _> = cluster_settings(3).into_iter().collect();
        assert_eq!(settings["default.replication.factor"], "3");
        assert_eq!(settings["min.insync.replicas"], "2");
        assert_eq!(settings["transaction.state.log.min.isr"], "2");
        let single: std::collections::BTreeMap<_, _> = single_broker_settings().into_iter().collect();
        assert_eq!(single["offsets.topic.replication.factor"], "1");
        assert_eq!(single["min.insync.replicas"], "1");
    }

    #[test]
    fn a_taken_port_is_reported_with_its_owner() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let message = ensure_port_free(port).unwrap_err().to_string();
        assert!(message.contains(&format!("port {port}")), "{message}");
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(listener);
        ensure_port_free(port).unwrap();
    }
}
