//! `illume serve`: an OpenAI-compatible HTTP server on the pipeline facade — chat
//! completions with images in, image generations and edits out — with a bounded queue,
//! cancellation when a client disconnects, a time limit, API keys and Prometheus metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use illume::pipeline::Pipeline;
//! use illume::serve::{ServeConfig, Server};
//! let server = Server::bind(Pipeline::builder().build()?, ServeConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod chat;
mod error;
mod images;
mod input;
mod jobs;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use self::error::ApiError;
use self::jobs::Queue;
use self::metrics::Metrics;
use crate::pipeline::{Component, Pipeline};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (default 127.0.0.1:8080: loopback only).
    pub addr: SocketAddr,
    /// When set, every `/v1` route needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Requests that may wait for or run on the model at once; more get 429.
    pub queue: usize,
    /// A request still running after this long is stopped (503).
    pub time_limit: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest image accepted in a request, in pixels (checked before decoding).
    pub max_image_pixels: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            queue: 8,
            time_limit: Duration::from_secs(600),
            max_body_bytes: 20 << 20,
            max_image_pixels: 4096 * 4096,
        }
    }
}

pub(crate) struct AppState {
    pipeline: Arc<Pipeline>,
    config: ServeConfig,
    queue: Queue,
    metrics: Metrics,
    /// The id `/v1/models` lists and answers carry.
    model_id: String,
    ids: AtomicU64,
}

impl AppState {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A bound server, not yet serving.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: Router,
}

impl Server {
    /// Bind `config.addr` (port 0: any free port) with `pipeline` behind the routes.
    pub async fn bind(pipeline: Pipeline, config: ServeConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        Ok(Self {
            listener,
            app: router(pipeline, config),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `shutdown` completes; then stop accepting, let in-flight requests finish
    /// (their time limit bounds the wait) and return.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// The routes, their limits and middleware.
pub fn router(pipeline: Pipeline, config: ServeConfig) -> Router {
    // The MLLM folder's name (a repo id's last part), or the demo's.
    let model_id = match pipeline.source(Component::Mllm).as_str() {
        "demo" => "illume-plus-demo".to_string(),
        path => std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string()),
    };
    let state = Arc::new(AppState {
        pipeline: Arc::new(pipeline),
        queue: Queue::new(config.queue.max(1)),
        metrics: Metrics::default(),
        model_id,
        ids: AtomicU64::new(1),
        config: config.clone(),
    });
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/images/edits", post(images::edits))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .with_state(state)
}

/// A panic in a handler becomes a 500 in the API's shape; the server goes on.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("the server hit an internal error handling this request").into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(request.uri().path())
}

async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compare keys without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Count every answer by route and status, with its latency.
async fn record(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "backend": state.pipeline.backend().name(),
        "queue_depth": state.queue.depth(),
    }))
}

async fn models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "illume-rs",
        }],
    }))
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.queue.depth()),
    )
        .into_response()
}
