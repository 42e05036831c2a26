//! Each running unit's progress in the terminal: a bar per unit when
//! stderr is a terminal, a log line per unit every half minute otherwise.

use crate::control::describe;
use crate::governor::Governor;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::ReplicaId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the worker shows progress.
#[derive(Clone, Debug, Default)]
pub enum Display {
    /// Not at all (a worker inside another program, or tests).
    #[default]
    Off,
    /// A log line per running unit every 30 seconds.
    Log,
    /// A live bar per running unit (the same [`MultiProgress`] the log
    /// writer prints through, so lines and bars do not tear).
    Bars(MultiProgress),
}

impl Display {
    /// Bars on a terminal, log lines elsewhere.
    pub fn for_stderr() -> Display {
        use std::io::IsTerminal as _;
        if std::io::stderr().is_terminal() {
            Display::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Display::Log
        }
    }
}

/// A `tracing` writer that prints through the bars (suspending them for
/// the line), or straight to stderr when there are none.
#[derive(Clone, Debug)]
pub struct LogWriter(pub Option<MultiProgress>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(bars) => bars.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

/// Shows progress until `stop` turns true.
pub async fn show(display: Display, governor: Arc<Governor>, mut stop: watch::Receiver<bool>) {
    let every = match display {
        Display::Off => return,
        Display::Log => Duration::from_secs(30),
        Display::Bars(_) => Duration::from_millis(500),
    };
    let mut bars: HashMap<ReplicaId, ProgressBar> = HashMap::new();
    let style = ProgressStyle::with_template("{prefix:>5} [{bar:30.cyan/blue}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => {}
        }
        let stopping = *stop.borrow();
        let running = governor.running();
        let paused = governor.paused();
        match &display {
            Display::Off => return,
            Display::Log => {
                if paused.any() && !running.is_empty() {
                    tracing::info!(?paused, "paused; {} unit(s) wait", running.len());
                }
                for unit in &running {
                    tracing::info!("{}", describe(unit));
                }
            }
            Display::Bars(multi) => {
                bars.retain(|id, bar| {
                    let keep = running.iter().any(|u| u.replica_id == *id) && !stopping;
                    if !keep {
                        bar.finish_and_clear();
                        multi.remove(bar);
                    }
                    keep
                });
                for unit in &running {
                    let bar = bars.entry(unit.replica_id).or_insert_with(|| {
                        let bar = multi.add(ProgressBar::new(1000));
                        bar.set_style(style.clone());
                        bar
                    });
                    bar.set_position(unit.fraction().map_or(0, |f| (f * 1000.0) as u64));
                    bar.set_prefix(match unit.fraction() {
                        Some(f) => format!("{:.0}%", f * 100.0),
                        None => "?".into(),
                    });
                    let state = if paused.any() { " (paused)" } else { "" };
                    bar.set_message(format!("{}{state}", describe(unit)));
                }
            }
        }
        if stopping {
            return;
        }
    }
}
