//! The facts a reader needs to weigh the figures: the machine (cores, CPU, memory, how busy it was) and the
//! client libraries' versions. Read from /proc (Linux) where possible; anything unknown says so.

use std::process::Command;
use std::time::Duration;

/// The workspace's Cargo.lock, read at compile time: the exact client crate versions this binary was built with
/// (cargo gives a crate its own version, not its dependencies').
const CARGO_LOCK: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));

/// "2 cores (Intel(R) Xeon(R) Processor), 23.4 GiB memory, Linux 6.1.0".
pub fn describe_machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpu_model(&cpuinfo).unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| memory_gib(&m))
        .map_or_else(|| "unknown memory".to_string(), |gib| format!("{gib:.1} GiB memory"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| format!("{} {}", os_name(), k.trim()))
        .unwrap_or_else(|_| os_name().to_string());
    format!("{cores} {} ({cpu}), {memory}, {kernel}", if cores == 1 { "core" } else { "cores" })
}

fn os_name() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "macOS",
        other => other,
    }
}

/// The 1-minute load average: how many processes were running or waiting for a CPU, on average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// "; 1-minute load average 1.7 as the run started and 4.2 as it ended (2 cores: above 2, something waited for a
/// CPU)", or nothing when the system does not say.
pub fn describe_load(cores: usize, start: Option<f64>, end: Option<f64>) -> String {
    match (start, end) {
        (Some(start), Some(end)) => format!(
            "; 1-minute load average {start:.1} as the run started and {end:.1} as it ended ({cores} cores: above \
             {cores}, something waited for a CPU)"
        ),
        _ => String::new(),
    }
}

/// The first `model name` of /proc/cpuinfo, spaces squeezed.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

/// MemTotal of /proc/meminfo in GiB.
pub fn memory_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// The version of `package` in a Cargo.lock.
pub fn locked_version(lock: &str, package: &str) -> Option<String> {
    let mut lines = lock.lines();
    let wanted = format!("name = \"{package}\"");
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

/// The client libraries: "librdkafka 2.12.1 (rdkafka 0.39.0); lapin 4.12.3".
pub fn describe_clients() -> String {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let crate_version = |name: &str| locked_version(CARGO_LOCK, name).unwrap_or_else(|| "?".into());
    format!(
        "librdkafka {librdkafka} (the rdkafka crate {}), lapin {}; Rust, tokio",
        crate_version("rdkafka"),
        crate_version("lapin")
    )
}

/// The JVM `java` on the PATH runs, "Java 17.0.13", or `None` when there is none.
pub fn java_version() -> Option<String> {
    let output = Command::new("java").arg("-version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stderr);
    let quoted = text.lines().next()?.split('"').nth(1)?;
    Some(format!("Java {quoted}"))
}

/// The maximum heap of JVM `pid`, from its `-Xmx` argument ("512m"), when it has one.
pub fn jvm_heap(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    xmx(&String::from_utf8_lossy(&cmdline))
}

/// The value of the last `-Xmx` in a NUL-separated command line.
pub fn xmx(cmdline: &str) -> Option<String> {
    cmdline.split('\0').filter_map(|arg| arg.strip_prefix("-Xmx")).next_back().map(str::to_string)
}

/// How long process `pid` has been running (Linux: its /proc entry was made when it started).
pub fn process_age(pid: u32) -> Option<Duration> {
    let started = std::fs::metadata(format!("/proc/{pid}")).ok()?.modified().ok()?;
    started.elapsed().ok()
}

/// "12 min", "3 h 5 min", "40 s".
pub fn human_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_and_memory_are_read_from_proc() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Intel(R)  Xeon(R) Processor\nflags\t: fpu\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("Intel(R) Xeon(R) Processor"));
        assert_eq!(cpu_model("processor : 0\n"), None);
        let meminfo = "MemTotal:       24523456 kB\nMemFree:  1 kB\n";
        assert!((memory_gib(meminfo).unwrap() - 23.387).abs() < 0.001);
    }

    #[test]
    fn client_versions_come_from_the_lock_file() {
        let lock = "[[package]]\nname = \"lapin\"\nversion = \"4.12.3\"\nsource = \"registry\"\n";
        assert_eq!(locked_version(lock, "lapin").as_deref(), Some("4.12.3"));
        assert_eq!(locked_version(lock, "lap"), None);
        assert!(locked_version(CARGO_LOCK, "lapin").is_some(), "the workspace's lock names lapin");
    }

    #[test]
    fn the_load_is_said_with_what_it_means_on_this_many_cores() {
        assert_eq!(
            describe_load(2, Some(1.74), Some(4.23)),
            "; 1-minute load average 1.7 as the run started and 4.2 as it ended (2 cores: above 2, something \
             waited for a CPU)"
        );
        assert_eq!(describe_load(2, None, Some(1.0)), "");
    }

    #[test]
    fn the_jvm_heap_is_read_from_its_command_line() {
        assert_eq!(xmx("java\0-Xms512m\0-Xmx512m\0-cp\0x.jar").as_deref(), Some("512m"));
        assert_eq!(xmx("java\0-cp\0x.jar"), None);
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(human_age(Duration::from_secs(40)), "40 s");
        assert_eq!(human_age(Duration::from_secs(12 * 60 + 5)), "12 min");
        assert_eq!(human_age(Duration::from_secs(3 * 3600 + 5 * 60)), "3 h 5 min");
    }
}
