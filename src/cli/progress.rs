//! The pipeline's events rendered on stderr: a spinner naming the stage, a token bar with
//! tokens/s and ETA, a step bar with s/step; answer text streamed to stdout.

use std::io::Write;
use std::time::{Duration, Instant};

use illume::backends::human_bytes;
use illume::pipeline::{Event, Events, Flow, TokenKind};
use indicatif::{ProgressBar, ProgressStyle};

pub(super) struct Progress {
    bar: ProgressBar,
    /// Answer text goes to stdout as it is generated (not under `--json`, whose document
    /// holds the whole answer).
    stream_text: bool,
    notice_shown: bool,
    /// Whether answer text has started (the bar is gone then).
    streaming: bool,
    diffusion_started: Option<Instant>,
}

impl Progress {
    /// Progress on stderr; answer text streamed to stdout unless `json`.
    pub(super) fn new(json: bool) -> Self {
        let bar = ProgressBar::new_spinner();
        spinner_style(&bar);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            stream_text: !json,
            notice_shown: false,
            streaming: false,
            diffusion_started: None,
        }
    }

    fn stage(&self, message: String) {
        spinner_style(&self.bar);
        self.bar.set_message(message);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn spinner_style(bar: &ProgressBar) {
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
}

fn bar_style(bar: &ProgressBar, unit: &str) {
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{elapsed}}, eta {{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
}

impl Events for Progress {
    fn event(&mut self, event: &Event) -> Flow {
        match event {
            Event::Loading {
                component,
                path,
                files,
                bytes,
                demo,
            } => {
                if *demo && !self.notice_shown {
                    self.notice_shown = true;
                    self.bar.suspend(|| eprintln!("{}", illume::demo::NOTICE));
                }
                let count = match files.len() {
                    1 => String::new(),
                    n => format!("{n} files, "),
                };
                self.stage(format!(
                    "loading {} from {} ({count}{})",
                    component.name(),
                    path.display(),
                    human_bytes(*bytes)
                ));
            }
            Event::Unloaded { component } => {
                self.stage(format!("freed {} to make room", component.name()))
            }
            Event::Encoding { images } => self.stage(format!(
                "encoding the input image{}",
                if *images == 1 { "" } else { "s" }
            )),
            Event::Prefill => self.stage("reading the prompt".into()),
            Event::Token {
                image,
                index,
                max,
                kind,
            } => match kind {
                TokenKind::Text(_) if !self.stream_text => self
                    .bar
                    .set_message(format!("answering: {} tokens", index + 1)),
                TokenKind::Text(text) => {
                    if !self.streaming {
                        self.streaming = true;
                        self.bar.finish_and_clear();
                    }
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                }
                _ => {
                    if *index == 0 {
                        bar_style(&self.bar, "tokens");
                        self.bar.set_length(*max as u64);
                        self.bar
                            .set_message(format!("generating image {}", image + 1));
                        self.bar.reset_elapsed();
                    }
                    self.bar.set_position(*index as u64 + 1);
                }
            },
            Event::Decoding { diffusion, .. } => {
                if *diffusion {
                    self.stage("denoising".into());
                    self.diffusion_started = Some(Instant::now());
                } else {
                    self.stage("decoding the tokens to pixels".into());
                }
            }
            Event::DiffusionStep { index, total, .. } => {
                if *index == 0 {
                    bar_style(&self.bar, "steps");
                    self.bar.set_length(*total as u64);
                    self.bar.reset_elapsed();
                }
                if let Some(started) = self.diffusion_started {
                    let per_step = started.elapsed().as_secs_f64() / (index + 1) as f64;
                    self.bar
                        .set_message(format!("denoising, {per_step:.2} s/step"));
                }
                self.bar.set_position(*index as u64 + 1);
            }
            _ => {}
        }
        Flow::Continue
    }
}
