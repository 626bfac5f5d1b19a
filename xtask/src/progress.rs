//! The one spinner style of the chores, for steps that take a while (installs, compose, grading).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A ticking spinner with `message` and the elapsed time; finish it with `finish_and_clear`.
pub fn spinner(message: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner
}
