//! Terminal progress bars for long operations; silent when stderr is not a terminal or output is
//! JSON.
//!
//! Owns drawing only; the library reports progress through `layercas::progress`.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use layercas::progress::{DynProgress, Progress};

struct Bar(ProgressBar);

impl Progress for Bar {
    fn set_total(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn phase(&self, label: &str) {
        self.0.set_message(label.to_string());
        self.0.set_position(0);
        self.0.set_length(0);
    }
}

/// A byte progress bar labelled `what`, or nothing when it should not be drawn.
pub fn bar(what: &str, enabled: bool) -> (DynProgress, Option<ProgressBar>) {
    make(
        what,
        "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        enabled,
    )
}

/// A counter of `unit`s (timelines, objects...) labelled `what`, or nothing when it should not
/// be drawn.
pub fn counter(what: &str, unit: &str, enabled: bool) -> (DynProgress, Option<ProgressBar>) {
    let template = format!("{{msg:>12}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{elapsed}}");
    make(what, &template, enabled)
}

fn make(what: &str, template: &str, enabled: bool) -> (DynProgress, Option<ProgressBar>) {
    if !enabled || !std::io::stderr().is_terminal() {
        return (layercas::progress::none(), None);
    }
    let pb = ProgressBar::new(0);
    let style = ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(what.to_string());
    (Arc::new(Bar(pb.clone())), Some(pb))
}

/// Removes a finished bar from the screen.
pub fn finish(pb: Option<ProgressBar>) {
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
}
