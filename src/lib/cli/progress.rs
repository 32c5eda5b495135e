//! Progress display: an indicatif bar on a terminal, nothing otherwise (batch output
//! stays one line per step).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A counter of finished items with unknown total.
pub fn counter(message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}: {pos} [{elapsed_precise}, {per_sec}]").expect("valid template"),
    );
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
