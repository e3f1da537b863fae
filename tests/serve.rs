//! `illume serve` over loopback with the demo models: every route, streamed and not, the
//! error shapes and statuses, cancellation on disconnect, and a bounded load test.
//! Requests go over plain TCP (HTTP/1.1, `Connection: close`) so nothing but the server
//! is under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use illume::backends::{BackendChoice, BackendKind};
use illume::pipeline::Pipeline;
use illume::serve::{ServeConfig, Server};
use serde_json::{json, Value};

/// A server on an ephemeral loopback port, stopped (gracefully) when dropped.
struct TestServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    fn start(config: ServeConfig) -> Self {
        let pipeline = Pipeline::builder()
            .backend(BackendChoice::Kind(BackendKind::Flex))
            .build()
            .expect("the demo pipeline starts on flex");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let config = ServeConfig {
                    addr: "127.0.0.1:0".parse().unwrap(),
                    ..config
                };
                let server = Server::bind(pipeline, config).await.unwrap();
                addr_tx.send(server.local_addr()).unwrap();
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().expect("the server binds");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A 200, or the failure with the body that explains it.
    fn expect_ok(&self) {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The OpenAI error object, checked for its shape.
    fn error(&self) -> Value {
        let body = self.json();
        let error = &body["error"];
        assert!(error["message"].is_string(), "{body}");
        assert!(error["type"].is_string(), "{body}");
        assert!(
            error.get("param").is_some() && error.get("code").is_some(),
            "{body}"
        );
        error.clone()
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A body the server refuses early may not be read whole: a failed write is fine.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
    out
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    send(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn png_data_url() -> String {
    let image = image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, 90])
    });
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    )
}

fn chat_body(max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "anything",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": png_data_url()}}
            ]},
            {"role": "assistant", "content": "Colours."},
            {"role": "user", "content": "Which ones?"}
        ],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_string())
        .collect()
}

fn b64_png_size(b64: &str) -> (u32, u32) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "b64_json is a PNG");
    let image = image::load_from_memory(&bytes).unwrap();
    (image.width(), image.height())
}

fn multipart(fields: &[(&str, &[u8], Option<&str>)]) -> (String, Vec<u8>) {
    let boundary = "illume-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, value, filename) in fields {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(file) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn every_route_answers_in_openai_shapes() {
    let server = TestServer::start(ServeConfig::default());
    let addr = server.addr;

    let health = send(addr, "GET", "/health", &[], b"");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let models = send(addr, "GET", "/v1/models", &[], b"");
    assert_eq!(models.status, 200);
    assert_eq!(models.json()["data"][0]["id"], "illume-plus-demo");

    // Chat, whole: a multi-turn conversation with an image.
    let reply = post_json(addr, "/v1/chat/completions", &chat_body(5, false));
    reply.expect_ok();
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert!(body["choices"][0]["message"]["content"].is_string());
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 5, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert!(
        usage["prompt_tokens"].as_u64().unwrap() > 20,
        "the image counts: {body}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + 5)
    );

    // Streamed: a role chunk, content chunks, the finish chunk, [DONE]; the same text.
    let reply = post_json(addr, "/v1/chat/completions", &chat_body(5, true));
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let data = sse_data(&reply.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        body["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Image generation: b64_json PNGs of the requested size, n of them.
    let reply = post_json(
        addr,
        "/v1/images/generations",
        &json!({"prompt": "a red circle", "size": "256x256", "n": 2, "seed": 3,
                "negative_prompt": "blue", "guidance_scale": 2.5}),
    );
    reply.expect_ok();
    let data = reply.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2);
    for image in &data {
        assert_eq!(
            b64_png_size(image["b64_json"].as_str().unwrap()),
            (256, 256)
        );
    }

    // Edits: multipart image + prompt → the input's size.
    let png = base64::engine::general_purpose::STANDARD
        .decode(png_data_url().split_once(',').unwrap().1)
        .unwrap();
    let (content_type, body) = multipart(&[
        ("image", &png, Some("in.png")),
        ("prompt", b"make it red", None),
        ("seed", b"5", None),
    ]);
    let reply = send(
        addr,
        "POST",
        "/v1/images/edits",
        &[("Content-Type", &content_type)],
        &body,
    );
    reply.expect_ok();
    let b64 = reply.json()["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(b64_png_size(&b64), (96, 64));
    // A served size resizes the edit, and its parameters say so.
    let (content_type, body) = multipart(&[
        ("image", &png, Some("in.png")),
        ("prompt", b"make it red", None),
        ("size", b"256x256", None),
    ]);
    let reply = send(
        addr,
        "POST",
        "/v1/images/edits",
        &[("Content-Type", &content_type)],
        &body,
    );
    reply.expect_ok();
    let b64 = reply.json()["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(b64_png_size(&b64), (256, 256));
    let png_out = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let text = String::from_utf8_lossy(&png_out);
    assert!(
        text.contains("illume.output_size\x00256x256"),
        "the PNG says its size"
    );

    let metrics = send(addr, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        "illume_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
        "illume_requests_total{route=\"/v1/images/generations\",status=\"200\"} 1",
        "illume_queue_depth 0",
        "illume_tokens_generated_total",
        "illume_request_duration_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(text.contains(needle), "`{needle}` missing:\n{text}");
    }
}

#[test]
fn bad_requests_get_the_right_status_and_error_json() {
    let server = TestServer::start(ServeConfig {
        api_key: Some("sesame".into()),
        max_body_bytes: 1 << 20,
        ..ServeConfig::default()
    });
    let addr = server.addr;
    let auth = ("Authorization", "Bearer sesame");
    let json_type = ("Content-Type", "application/json");
    let post =
        |path: &str, body: &str| send(addr, "POST", path, &[auth, json_type], body.as_bytes());

    // The key: missing or wrong → 401; /health needs none.
    let chat = chat_body(2, false).to_string();
    for headers in [
        vec![json_type],
        vec![json_type, ("Authorization", "Bearer wrong")],
    ] {
        let reply = send(
            addr,
            "POST",
            "/v1/chat/completions",
            &headers,
            chat.as_bytes(),
        );
        assert_eq!(reply.status, 401);
        assert_eq!(reply.error()["code"], "invalid_api_key");
    }
    assert_eq!(send(addr, "GET", "/health", &[], b"").status, 200);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v1/chat/completions", "{not json".into(), 400, "invalid_json"),
        ("/v1/chat/completions", json!({"messages": 3}).to_string(), 422, "invalid_body"),
        ("/v1/chat/completions", json!({"model": "x"}).to_string(), 422, "invalid_body"),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]}]}).to_string(),
            400,
            "invalid_base64",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}).to_string(),
            400,
            "invalid_image_url",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]}).to_string(),
            400,
            "",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 7}).to_string(),
            400,
            "",
        ),
        ("/v1/images/generations", json!({"prompt": "x", "size": "640x480"}).to_string(), 400, ""),
        ("/v1/images/generations", json!({"prompt": "x", "response_format": "url"}).to_string(), 400, ""),
        ("/v1/images/generations", json!({"prompt": "x", "decoder": "magic"}).to_string(), 400, ""),
        (
            "/v1/images/generations",
            json!({"prompt": "x", "size": "256x256", "guidance_scale": 1.0, "negative_prompt": "y"}).to_string(),
            400,
            "invalid_value",
        ),
        ("/v1/images/generations", json!({"size": "256x256"}).to_string(), 422, "invalid_body"),
    ];
    for (path, body, status, code) in &cases {
        let reply = post(path, body);
        assert_eq!(
            reply.status,
            *status,
            "{path} {body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let error = reply.error();
        if !code.is_empty() {
            assert_eq!(error["code"], *code, "{path} {body}: {error}");
        }
    }
    let unknown_size = post(
        "/v1/images/generations",
        &json!({"prompt": "x", "size": "640x480"}).to_string(),
    );
    let error = unknown_size.error();
    assert_eq!(error["param"], "size");
    assert!(
        error["message"].as_str().unwrap().contains("512x512"),
        "{error}"
    );

    // Oversized body → 413; not JSON → 415; an unknown route → 404; a wrong method → 405.
    let big = format!("{{\"messages\": \"{}\"}}", "x".repeat(2 << 20));
    let reply = post("/v1/chat/completions", &big);
    assert_eq!(reply.status, 413);
    assert_eq!(reply.error()["code"], "body_too_large");
    let reply = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &[auth, ("Content-Type", "text/plain")],
        chat.as_bytes(),
    );
    assert_eq!(reply.status, 415);
    reply.error();
    let reply = send(addr, "GET", "/v1/nothing", &[auth], b"");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error()["code"], "not_found");
    let reply = send(addr, "GET", "/v1/chat/completions", &[auth], b"");
    assert_eq!(reply.status, 405);
    reply.error();

    // Edits: no image, a mask, an image that is not one.
    let (content_type, body) = multipart(&[("prompt", b"x", None)]);
    let reply = send(
        addr,
        "POST",
        "/v1/images/edits",
        &[auth, ("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error()["param"], "image");
    let (content_type, body) = multipart(&[
        ("image", b"GIF89a-not-really", Some("x.gif")),
        ("prompt", b"x", None),
    ]);
    let reply = send(
        addr,
        "POST",
        "/v1/images/edits",
        &[auth, ("Content-Type", &content_type)],
        &body,
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error()["code"], "invalid_image");

    // After all that, the server still serves.
    let reply = send(
        addr,
        "POST",
        "/v1/chat/completions",
        &[auth, json_type],
        chat.as_bytes(),
    );
    reply.expect_ok();
}

/// A client that goes away mid-stream cancels its job: the server counts it cancelled
/// (a job that ran to its end would count its tokens instead) and frees its place, so the
/// next request is served. Sampled with a seed whose answer runs ~1400 tokens before the
/// demo model's end token, so the job is still running when the client leaves.
#[test]
fn a_disconnect_mid_stream_cancels_the_job() {
    let server = TestServer::start(ServeConfig {
        queue: 1,
        ..ServeConfig::default()
    });
    let addr = server.addr;
    let body = json!({"messages": [{"role": "user", "content": "Tell me everything."}],
                      "max_tokens": 3000, "temperature": 1.0, "seed": 1, "stream": true})
    .to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read until content chunks arrive: the generation is running.
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    let mut contents = 0;
    while contents < 3 {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        assert!(
            !line.contains("[DONE]"),
            "the answer ended before the test could leave"
        );
        if line.contains("\"content\"") && !line.contains("\"role\"") {
            contents += 1;
        }
    }
    drop(reader);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(stream);
    let left = Instant::now();
    let metric = |name: &str| -> u64 {
        let text = String::from_utf8(send(addr, "GET", "/metrics", &[], b"").body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    while metric("illume_requests_cancelled_total ") == 0 {
        assert!(
            left.elapsed() < Duration::from_secs(30),
            "the job was not cancelled"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("cancelled {:?} after the disconnect", left.elapsed());
    assert_eq!(
        metric("illume_tokens_generated_total "),
        0,
        "the job did not run to its end"
    );
    // Its place is free: the next request is served.
    let reply = loop {
        let reply = post_json(
            addr,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        );
        if reply.status != 429 || left.elapsed() > Duration::from_secs(30) {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    reply.expect_ok();
}

/// 8 clients × 8 requests (chat and image generation mixed) against a queue of 3: every
/// request gets a 200 or a 429 in the API's shape, none is lost or hangs.
#[test]
fn load_over_the_queue_gets_answers_or_429s() {
    let server = TestServer::start(ServeConfig {
        queue: 3,
        ..ServeConfig::default()
    });
    let addr = server.addr;
    // Warm up (the models load on first use), then watch the process's resident memory.
    let warm = post_json(
        addr,
        "/v1/images/generations",
        &json!({"prompt": "a square", "size": "256x256"}),
    );
    assert_eq!(warm.status, 200);
    let rss_before = resident_bytes();
    let started = Instant::now();
    let results: Vec<(bool, u16, Duration)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                s.spawn(move || {
                    (0..8)
                        .map(|i| {
                            let image = (client + i) % 4 == 0;
                            let t = Instant::now();
                            let reply = if image {
                                post_json(addr, "/v1/images/generations", &json!({"prompt": "a square", "size": "256x256", "seed": i}))
                            } else {
                                post_json(addr, "/v1/chat/completions", &json!({"messages": [{"role": "user", "content": format!("question {i}")}], "max_tokens": 8}))
                            };
                            if reply.status == 429 {
                                assert_eq!(reply.error()["type"], "rate_limit_error");
                                assert!(reply.header("retry-after").is_some());
                            }
                            (image, reply.status, t.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let wall = started.elapsed();
    assert_eq!(results.len(), 64);
    assert!(
        results.iter().all(|(_, s, _)| *s == 200 || *s == 429),
        "{results:?}"
    );
    let served: Vec<&(bool, u16, Duration)> = results.iter().filter(|r| r.1 == 200).collect();
    assert!(!served.is_empty());
    let mut latencies: Vec<f64> = served.iter().map(|r| r.2.as_secs_f64()).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "load: {} served ({} images), {} refused with 429, wall {:.1} s, {:.2} served/s, \
         latency of served p50 {:.2} s p95 {:.2} s",
        served.len(),
        served.iter().filter(|r| r.0).count(),
        results.len() - served.len(),
        wall.as_secs_f64(),
        served.len() as f64 / wall.as_secs_f64(),
        pct(0.5),
        pct(0.95)
    );
    // The queue drained: nothing is left waiting.
    let health = send(addr, "GET", "/health", &[], b"").json();
    assert_eq!(health["queue_depth"], 0);
    // Reported, not asserted: the suite's other tests share this process's memory.
    if let (Some(before), Some(after)) = (rss_before, resident_bytes()) {
        eprintln!(
            "load: resident memory {} MiB before, {} MiB after",
            before >> 20,
            after >> 20
        );
    }
}

/// This process's resident memory (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

/// A request still running at the time limit is stopped: 503 with `Retry-After`, and the
/// server goes on serving.
#[test]
fn a_request_past_the_time_limit_gets_503() {
    let server = TestServer::start(ServeConfig {
        time_limit: Duration::from_millis(1),
        ..ServeConfig::default()
    });
    let reply = post_json(
        server.addr,
        "/v1/images/generations",
        &json!({"prompt": "a square", "size": "256x256"}),
    );
    assert_eq!(
        reply.status,
        503,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.error()["code"], "timeout");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        send(server.addr, "GET", "/health", &[], b"").json()["queue_depth"],
        0
    );
}
