//! The progress line of `outpost site sync` on a terminal.
//!
//! On a link of a few kilobits a page takes many seconds, so the line is redrawn four times a
//! second from the bytes moving now (counted by the client as they go), not only when a page
//! ends. Log lines are written above it ([`LogWriter`]), never through it.

use site::link::{Direction, Link};
use site::sync::Step;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use site::client::human_bytes;

/// The line on the screen now, shared by the ticker and the log writer.
static LINE: Mutex<Option<String>> = Mutex::new(None);

/// Writes log lines above the progress line: the line is cleared, the log written, the line
/// drawn again.
#[derive(Debug, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = LINE.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        if line.is_some() {
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write_all(buf)?;
        if let Some(text) = line.as_deref() {
            err.write_all(text.as_bytes())?;
        }
        err.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        *self
    }
}

fn draw(text: Option<String>) {
    let mut line = LINE.lock().unwrap_or_else(|e| e.into_inner());
    let mut err = std::io::stderr().lock();
    let _ = match &text {
        Some(text) => write!(err, "\r\x1b[2K{text}"),
        None if line.is_some() => writeln!(err),
        None => Ok(()),
    };
    let _ = err.flush();
    *line = text;
}

/// What the line is drawn from.
#[derive(Debug)]
pub struct State {
    step: Step,
    /// When the sync, and the current step, began.
    started: Instant,
    step_started: Instant,
    /// Bytes sent and received when the current kind of step began (at the last report of the
    /// step before it: a page's bytes arrive before the page is reported), to tell the bytes a
    /// change takes.
    base: (u64, u64),
    last: (u64, u64),
    /// Recent (time, bytes moved either way), for the rate over the last seconds.
    samples: VecDeque<(Instant, u64)>,
}

impl State {
    fn new(now: Instant) -> State {
        State {
            step: Step::Connecting,
            started: now,
            step_started: now,
            base: (0, 0),
            last: (0, 0),
            samples: VecDeque::new(),
        }
    }

    fn set(&mut self, step: Step, now: Instant, sent: u64, received: u64) {
        let same_kind = std::mem::discriminant(&step) == std::mem::discriminant(&self.step);
        if !same_kind {
            self.step_started = now;
            if !matches!(step, Step::Retrying { .. }) && !matches!(self.step, Step::Retrying { .. }) {
                self.base = self.last;
            }
        }
        self.step = step;
        self.last = (sent, received);
    }

    fn sample(&mut self, now: Instant, moved: u64) -> f64 {
        self.samples.push_back((now, moved));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > RATE_WINDOW {
            self.samples.pop_front();
        }
        let (then, before) = self.samples[0];
        let secs = now.duration_since(then).as_secs_f64();
        if secs < 0.5 {
            return 0.0;
        }
        (moved - before) as f64 / secs
    }
}

/// The rate shown is over the last few seconds: a page's bytes arrive in bursts.
const RATE_WINDOW: Duration = Duration::from_secs(8);

/// Renders the progress line: what the sync does, how far, the bytes and the rate, and the
/// time left at that rate.
pub fn render(state: &State, now: Instant, sent: u64, received: u64, rate: f64, measured: Option<f64>) -> String {
    let elapsed = now.duration_since(state.started).as_secs();
    let bytes = format!("{} sent, {} received", human_bytes(sent), human_bytes(received));
    let speed = if rate > 0.0 { format!(", {}/s", human_bytes(rate as u64)) } else { String::new() };
    // The rate now, or else the rate the link was measured at.
    let rate = if rate > 0.0 { Some(rate) } else { measured };
    let left = |done: u64, todo: u64, bytes_done: u64| -> String {
        let (Some(rate), true) = (rate, done > 0 && todo > 0 && bytes_done > 0) else { return String::new() };
        let secs = (todo as f64 * bytes_done as f64 / done as f64 / rate).ceil() as u64;
        format!(" | about {} left", duration(secs))
    };
    match state.step {
        Step::Connecting => {
            format!("connecting to the central server... {elapsed} s | {bytes}{speed}")
        }
        Step::Pushing { pushed, waiting } => format!(
            "{} {pushed} of {} changes pushed | {bytes}{speed}{}",
            bar("push", pushed, pushed + waiting),
            pushed + waiting,
            left(pushed, waiting, sent - state.base.0)
        ),
        Step::Pulling { pulled: 0, remaining: 0 } => format!("pull: waiting for the first page | {bytes}{speed}"),
        Step::Pulling { pulled, remaining } => format!(
            "{} {pulled} pulled, {remaining} remaining | {bytes}{speed}{}",
            bar("pull", pulled, pulled + remaining),
            left(pulled, remaining, received - state.base.1)
        ),
        Step::Retrying { attempt, of, in_secs } => {
            let waited = now.duration_since(state.step_started).as_secs();
            match in_secs.checked_sub(waited).filter(|s| *s > 0) {
                Some(secs) => {
                    format!("the link failed; trying again in {secs} s (attempt {attempt} of {of}) | {bytes}")
                }
                None => format!("the link failed; trying again (attempt {attempt} of {of}) | {bytes}{speed}"),
            }
        }
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s >= 3_600 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

fn bar(label: &str, done: u64, total: u64) -> String {
    const WIDTH: u64 = 24;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH).min(WIDTH);
    format!("{label} [{}{}]", "#".repeat(filled as usize), "-".repeat((WIDTH - filled) as usize))
}

/// The progress line of one sync: silent when standard error is not a terminal (unless
/// `OUTPOST_PROGRESS=always`).
#[derive(Debug)]
pub struct Terminal {
    state: Option<Arc<Mutex<State>>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl Terminal {
    pub fn new(link: Arc<Link>) -> Terminal {
        let stop = Arc::new(AtomicBool::new(false));
        // `OUTPOST_PROGRESS=always` draws the line even into a file or a pipe (a log viewer, a
        // test), `never` not even on a terminal.
        let wanted = match std::env::var("OUTPOST_PROGRESS").as_deref() {
            Ok("always") => true,
            Ok("never") => false,
            _ => std::io::stderr().is_terminal(),
        };
        if !wanted {
            return Terminal { state: None, stop, ticker: None };
        }
        let state = Arc::new(Mutex::new(State::new(Instant::now())));
        let ticker = {
            let (state, link, stop) = (state.clone(), link.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (sent, received) = (link.sent(), link.received());
                    let now = Instant::now();
                    let text = {
                        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                        let rate = state.sample(now, sent + received);
                        let measured = match state.step {
                            Step::Pushing { .. } => link.rate(Direction::Up),
                            _ => link.rate(Direction::Down),
                        };
                        render(&state, now, sent, received, rate, measured)
                    };
                    draw(Some(text));
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Terminal { state: Some(state), stop, ticker: Some(ticker) }
    }

    /// Stops redrawing and leaves the last line on the screen.
    pub fn finish(mut self) {
        self.stop_ticker();
    }

    fn stop_ticker(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
            draw(None);
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.stop_ticker();
    }
}

impl site::Progress for Terminal {
    fn step(&mut self, step: Step, sent: u64, received: u64) {
        if let Some(state) = &self.state {
            state.lock().unwrap_or_else(|e| e.into_inner()).set(step, Instant::now(), sent, received);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(state: &mut State, step: Step, secs: u64, sent: u64, received: u64) -> Instant {
        let now = state.started + Duration::from_secs(secs);
        state.set(step, now, sent, received);
        now
    }

    #[test]
    fn the_line_says_what_the_sync_does_from_the_first_second() {
        let mut state = State::new(Instant::now());
        let now = at(&mut state, Step::Connecting, 1, 0, 0);
        assert_eq!(
            render(&state, now, 0, 0, 0.0, None),
            "connecting to the central server... 1 s | 0 B sent, 0 B received"
        );
    }

    #[test]
    fn pushing_shows_changes_bytes_rate_and_time_left() {
        let mut state = State::new(Instant::now());
        at(&mut state, Step::Pushing { pushed: 0, waiting: 2_000 }, 1, 300, 0);
        let now = at(&mut state, Step::Pushing { pushed: 500, waiting: 1_500 }, 21, 50_300, 400);
        assert_eq!(
            render(&state, now, 50_300, 400, 2_500.0, None),
            "push [######------------------] 500 of 2000 changes pushed | 49.1 KiB sent, 400 B received, 2.4 KiB/s | about 1 min 1 s left"
        );
    }

    #[test]
    fn pulling_before_the_rate_is_known_uses_the_measured_link() {
        let mut state = State::new(Instant::now());
        let now = at(&mut state, Step::Pulling { pulled: 1_000, remaining: 9_000 }, 9, 200, 8_000);
        // The first page is in; the rate of the last seconds is not known yet.
        assert_eq!(
            render(&state, now, 200, 8_000, 0.0, Some(6_000.0)),
            "pull [##----------------------] 1000 pulled, 9000 remaining | 200 B sent, 7.8 KiB received | about 12 s left"
        );
    }

    #[test]
    fn a_pull_says_so_before_its_first_page() {
        let mut state = State::new(Instant::now());
        let now = at(&mut state, Step::Pulling { pulled: 0, remaining: 0 }, 2, 300, 2_000);
        assert_eq!(
            render(&state, now, 300, 2_000, 1_000.0, None),
            "pull: waiting for the first page | 300 B sent, 2.0 KiB received, 1000 B/s"
        );
    }

    #[test]
    fn a_retry_counts_down() {
        let mut state = State::new(Instant::now());
        at(&mut state, Step::Retrying { attempt: 2, of: 8, in_secs: 4 }, 30, 9_000, 1_000);
        let now = state.started + Duration::from_secs(31);
        assert_eq!(
            render(&state, now, 9_000, 1_000, 0.0, None),
            "the link failed; trying again in 3 s (attempt 2 of 8) | 8.8 KiB sent, 1000 B received"
        );
    }
}
