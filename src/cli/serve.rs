//! `illume serve`: the OpenAI-compatible HTTP server on the loaded models.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use illume::serve::{ServeConfig, Server};

use super::common::{source, ModelArgs};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Routes (OpenAI's shapes; errors as {\"error\": {\"message\", \"type\", \
\"param\", \"code\"}}):\n  \
POST /v1/chat/completions   messages with text and image_url parts (data: URLs, base64 PNG/JPEG/\
WebP; the server fetches nothing), multi-turn, stream (SSE), max_tokens, temperature (0 = greedy, \
the default), top_p, seed, stop, n = 1\n  \
POST /v1/images/generations prompt, n, size (the trained sizes), response_format b64_json; \
extensions: seed, negative_prompt, guidance_scale, decoder (pixel | diffusion), steps\n  \
POST /v1/images/edits       multipart: image, prompt, n, size, the same extensions\n  \
GET  /v1/models, /health, /metrics (Prometheus)\n\n\
One model task runs at a time; --queue bounds how many requests wait or run (more get 429 with \
Retry-After); a client that disconnects cancels its request within one step; a request past \
--time-limit is stopped (503). With --api-key (or ILLUME_API_KEY) every /v1 route needs \
`Authorization: Bearer KEY`. SIGINT/SIGTERM stop accepting, let running requests finish and \
exit 0.\n\nExamples:\n  illume serve                     (demo models on 127.0.0.1:8080)\n  \
illume serve --model ILLUME-MLLM/illume_plus-qwen2_5-3b --tokenizer ILLUME-MLLM/dualvitok \
--port 9000 --api-key secret"
)]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// The diffusion decoder for `"decoder": "diffusion"` requests (default: the demo one).
    #[arg(long, value_name = "DIR")]
    pub diffusion: Option<PathBuf>,
    /// Address to listen on (loopback by default; 0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 route.
    #[arg(long, env = "ILLUME_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait for or run on the model at once.
    #[arg(long, default_value_t = 8, value_parser = super::values::positive)]
    pub queue: usize,
    /// Seconds a request may run before it is stopped.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = super::values::positive)]
    pub time_limit: usize,
    /// Largest request body, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 20, value_parser = super::values::positive)]
    pub max_body_mib: usize,
    /// Largest image accepted in a request, in pixels (width x height).
    #[arg(long, value_name = "N", default_value_t = 4096 * 4096, value_parser = super::values::positive)]
    pub max_image_pixels: usize,
}

pub fn run(args: Args, compute: super::Compute) -> super::CliResult {
    let builder = args
        .models
        .builder()
        .diffusion(source(args.diffusion.as_ref()));
    let pipeline = compute.open(builder)?;
    let config = ServeConfig {
        addr: SocketAddr::new(args.host, args.port),
        api_key: args.api_key.clone(),
        queue: args.queue,
        time_limit: Duration::from_secs(args.time_limit as u64),
        max_body_bytes: args.max_body_mib << 20,
        max_image_pixels: args.max_image_pixels as u64,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the server's runtime: {e}"))?;
    runtime.block_on(async move {
        let server = Server::bind(pipeline, config.clone())
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
        eprintln!(
            "listening on http://{}{}",
            server.local_addr(),
            if config.api_key.is_some() {
                " (API key required)"
            } else {
                ""
            }
        );
        server
            .run(shutdown_signal())
            .await
            .map_err(|e| format!("server: {e}"))?;
        eprintln!("stopped");
        Ok::<(), String>(())
    })?;
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!("shutting down: no new requests; waiting for running ones");
}
