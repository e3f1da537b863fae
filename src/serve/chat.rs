//! `POST /v1/chat/completions`: a conversation with images in, the answer out, whole or as
//! Server-Sent Events in OpenAI's chunk format.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::input::image_from_url;
use super::jobs::{self, CancelOnDrop, Stop};
use super::{unix_now, AppState};
use crate::mllm::{Decoding, SamplingParams, TextRequest};
use crate::pipeline::{Answer, ChatRequest, Event, Flow, TokenKind, Turn};

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Accepted and echoed; the server answers with the model it loaded.
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    /// Extension: top-k when sampling (0 = off, the default).
    top_k: Option<usize>,
    seed: Option<u64>,
    stop: Option<StopSequences>,
    n: Option<usize>,
    tools: Option<Value>,
    logprobs: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StopSequences {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
}

/// The largest answer a request may ask for.
const MAX_TOKENS: usize = 8192;

/// What a chat request asks the pipeline for.
struct Plan {
    request: ChatRequest,
    stops: Vec<String>,
    model: String,
}

fn plan(body: ChatCompletionRequest, state: &AppState) -> Result<Plan, ApiError> {
    if let Some(n) = body.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(
            "n",
            format!("n = {n}: one answer per request (n = 1)"),
        ));
    }
    if body.tools.is_some() {
        return Err(ApiError::invalid("tools", "tool calls are not supported"));
    }
    if body.logprobs == Some(true) {
        return Err(ApiError::invalid(
            "logprobs",
            "log-probabilities are not returned",
        ));
    }
    if body.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "at least one message is needed",
        ));
    }
    let mut turns = Vec::with_capacity(body.messages.len());
    let mut images = Vec::new();
    for (i, message) in body.messages.into_iter().enumerate() {
        let mut text = Vec::new();
        let mut count = 0;
        match message.content {
            Content::Text(t) => text.push(t),
            Content::Parts(parts) => {
                for (j, part) in parts.into_iter().enumerate() {
                    match part {
                        Part::Text { text: t } => text.push(t),
                        Part::ImageUrl { image_url } => {
                            let param = format!("messages[{i}].content[{j}].image_url.url");
                            images.push(image_from_url(
                                &image_url.url,
                                state.config.max_image_pixels,
                                &param,
                            )?);
                            count += 1;
                        }
                    }
                }
            }
        }
        let text = text.join("\n");
        turns.push(match message.role.as_str() {
            "user" => Turn::user(text, count),
            "assistant" if count == 0 => Turn::assistant(text),
            "assistant" => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].content"),
                    "assistant messages cannot hold images",
                ))
            }
            "system" | "developer" => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    "system messages are not supported: the model answers in the official \
                     chat template, whose system prompt is fixed",
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role `{other}`: user or assistant"),
                ))
            }
        });
    }
    let max_new_tokens = body
        .max_completion_tokens
        .or(body.max_tokens)
        .unwrap_or(1024);
    if !(1..=MAX_TOKENS).contains(&max_new_tokens) {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("{max_new_tokens}: ask for 1 to {MAX_TOKENS} tokens"),
        ));
    }
    let temperature = body.temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("{temperature}: must be 0 (greedy, the default) to 2"),
        ));
    }
    let mut text = TextRequest {
        max_new_tokens,
        ..TextRequest::default()
    };
    if temperature > 0.0 {
        text.decoding = Decoding::Sample {
            seed: body.seed.unwrap_or(0),
        };
        text.sampling = SamplingParams::new(
            temperature,
            body.top_k.unwrap_or(0),
            body.top_p.unwrap_or(1.0),
        );
    }
    let stops = match body.stop {
        None => Vec::new(),
        Some(StopSequences::One(s)) => vec![s],
        Some(StopSequences::Many(v)) => v,
    };
    if stops.len() > 4 || stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "up to 4 non-empty stop sequences",
        ));
    }
    let mut request = ChatRequest::new(turns, images);
    request.text = text;
    Ok(Plan {
        request,
        stops,
        model: body.model.unwrap_or_else(|| state.model_id.clone()),
    })
}

/// Text deltas with stop sequences cut out: what may be sent now, holding back a tail that
/// could still become a stop sequence.
#[derive(Default)]
struct StopFilter {
    stops: Vec<String>,
    text: String,
    sent: usize,
    stopped: bool,
}

impl StopFilter {
    fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            ..Self::default()
        }
    }

    /// Add a delta; returns the text that is now safe to send.
    fn push(&mut self, delta: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.text.push_str(delta);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            self.text.truncate(at);
            return self.take(at);
        }
        // Hold back the longest tail that is a prefix of a stop sequence.
        let hold = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).rev().map(move |n| &s[..n]))
            .filter(|prefix| self.text.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0);
        let safe = self.text.len() - hold;
        self.take(safe)
    }

    fn take(&mut self, upto: usize) -> String {
        let upto = (0..=upto)
            .rev()
            .find(|&i| self.text.is_char_boundary(i))
            .unwrap_or(0);
        let out = self.text[self.sent.min(upto)..upto].to_string();
        self.sent = self.sent.max(upto);
        out
    }

    /// The held-back tail once generation ended without a stop.
    fn finish(&mut self) -> String {
        self.take(self.text.len())
    }
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Json<ChatCompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let stream = body.stream;
    let plan = plan(body, &state)?;
    let place = state.queue.admit()?;
    let id = format!("chatcmpl-{}", state.next_id());
    if stream {
        return Ok(streamed(state, place, plan, id).into_response());
    }
    let stops = plan.stops.clone();
    let filter = Arc::new(Mutex::new(StopFilter::new(stops)));
    let seen = filter.clone();
    let request = plan.request;
    let max = request.text.max_new_tokens;
    let stop = Stop::default();
    let _cancel = CancelOnDrop(stop.client_gone.clone());
    let result = jobs::run_with(
        state.clone(),
        place,
        stop,
        move |event| text_delta(event, &seen),
        move |pipeline, events| pipeline.chat(&request, events),
    )
    .await;
    let mut filter = filter.lock().unwrap_or_else(|p| p.into_inner());
    let (text, finish, usage) = match result {
        Ok(answer) => {
            state.metrics.generated(answer.tokens, answer.seconds);
            let finish = finish_reason(&answer, max);
            let text = if filter.stops.is_empty() {
                answer.text.clone()
            } else {
                filter.finish();
                filter.text.clone()
            };
            (text, finish, usage(&answer))
        }
        // A stop sequence ended the generation.
        Err(_) if filter.stopped => (filter.text.clone(), "stop", Value::Null),
        Err(e) => return Err(e),
    };
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": unix_now(),
        "model": plan.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }],
        "usage": usage,
    }))
    .into_response())
}

/// The events callback of a chat task: text deltas into the stop filter, which cancels the
/// task once a stop sequence is complete.
fn text_delta(event: &Event, filter: &Mutex<StopFilter>) -> Flow {
    if let Event::Token {
        kind: TokenKind::Text(delta),
        ..
    } = event
    {
        let mut filter = filter.lock().unwrap_or_else(|p| p.into_inner());
        filter.push(delta);
        if filter.stopped {
            return Flow::Cancel;
        }
    }
    Flow::Continue
}

fn finish_reason(answer: &Answer, max: usize) -> &'static str {
    if answer.tokens >= max {
        "length"
    } else {
        "stop"
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.tokens,
        "total_tokens": answer.prompt_tokens + answer.tokens,
    })
}

/// What the streaming task sends the response stream.
enum Chunk {
    Delta(String),
    /// The finish reason, or the error that ended the answer.
    Done(Result<&'static str, ApiError>),
}

fn streamed(
    state: Arc<AppState>,
    place: tokio::sync::OwnedSemaphorePermit,
    plan: Plan,
    id: String,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    let request = plan.request;
    let max = request.text.max_new_tokens;
    let stop = Stop::default();
    // Dropping the response stream (the client disconnected) cancels the task.
    let cancel = CancelOnDrop(stop.client_gone.clone());
    let filter = Arc::new(Mutex::new(StopFilter::new(plan.stops)));
    let (deltas, seen) = (tx.clone(), filter.clone());
    tokio::spawn(async move {
        let result = jobs::run_with(
            state.clone(),
            place,
            stop,
            move |event| {
                let Event::Token {
                    kind: TokenKind::Text(delta),
                    ..
                } = event
                else {
                    return Flow::Continue;
                };
                let mut filter = seen.lock().unwrap_or_else(|p| p.into_inner());
                let safe = filter.push(delta);
                if !safe.is_empty() && deltas.blocking_send(Chunk::Delta(safe)).is_err() {
                    return Flow::Cancel;
                }
                if filter.stopped {
                    Flow::Cancel
                } else {
                    Flow::Continue
                }
            },
            move |pipeline, events| pipeline.chat(&request, events),
        )
        .await;
        let (tail, stopped) = {
            let mut filter = filter.lock().unwrap_or_else(|p| p.into_inner());
            (filter.finish(), filter.stopped)
        };
        let done = match result {
            Ok(answer) => {
                state.metrics.generated(answer.tokens, answer.seconds);
                if !tail.is_empty() {
                    let _ = tx.send(Chunk::Delta(tail)).await;
                }
                Ok(finish_reason(&answer, max))
            }
            Err(_) if stopped => Ok("stop"),
            Err(e) => Err(e),
        };
        let _ = tx.send(Chunk::Done(done)).await;
    });
    let created = unix_now();
    let model = plan.model;
    let chunk = move |delta: Value, finish: Option<&str>| {
        SseEvent::default().data(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
            .to_string(),
        )
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let body = stream::unfold(
        (rx, Some(cancel), chunk),
        |(mut rx, cancel, chunk)| async move {
            let events = match rx.recv().await? {
                Chunk::Delta(text) => vec![chunk(json!({ "content": text }), None)],
                Chunk::Done(result) => {
                    let last = match result {
                        Ok(finish) => chunk(json!({}), Some(finish)),
                        Err(e) => SseEvent::default().data(e.body().to_string()),
                    };
                    vec![last, SseEvent::default().data("[DONE]")]
                }
            };
            Some((
                stream::iter(events.into_iter().map(Ok)),
                (rx, cancel, chunk),
            ))
        },
    )
    .flatten();
    Sse::new(stream::once(async move { Ok(first) }).chain(body))
}

#[cfg(test)]
mod tests {
    use super::StopFilter;

    #[test]
    fn stop_sequences_are_cut_and_their_prefixes_held_back() {
        let mut f = StopFilter::new(vec!["END".into()]);
        assert_eq!(f.push("Hello E"), "Hello ");
        assert_eq!(f.push("N"), "");
        assert_eq!(f.push("D and more"), "");
        assert!(f.stopped);
        assert_eq!(f.text, "Hello ");

        let mut f = StopFilter::new(vec!["END".into()]);
        assert_eq!(f.push("Hello E"), "Hello ");
        assert_eq!(f.push("ND? no: Ex"), "");
        assert!(f.stopped, "END completed across deltas");

        let mut f = StopFilter::new(vec!["\n\n".into(), "###".into()]);
        assert_eq!(f.push("a\n"), "a");
        assert_eq!(f.push("b#"), "\nb");
        assert_eq!(f.push("c"), "#c");
        assert_eq!(f.finish(), "");
        assert_eq!(f.text, "a\nb#c");

        let mut f = StopFilter::new(Vec::new());
        assert_eq!(f.push("日本"), "日本");
        assert_eq!(f.finish(), "");
    }
}
