//! `illume chat`: a multi-turn conversation with the MLLM, one message from the command
//! line or an interactive session on stdin.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use illume::dualvitok::image_io;
use illume::pipeline::{ChatRequest, Pipeline, Turn};
use image::RgbImage;
use serde_json::json;

use super::common::{
    answer_json, answer_timing, generation_config_help, print_json, ModelArgs, TextArgs,
};
use super::progress::Progress;

#[derive(Debug, clap::Args)]
#[command(after_help = concat!(
    "The conversation follows the official chat template (`conv_qwen2`): the system turn, \
then each user and assistant turn, with a user turn's images first (`<image>\\n` each). Every \
answer is generated from the whole conversation so far.\n\n\
With MESSAGE: one user turn (with the --image images) is answered and the command exits. \
Without it: an interactive session reads messages from stdin, one per line; the --image \
images go with the first message. Commands:\n  \
/image PATH   attach an image to the next message (repeatable)\n  \
/reset        start a new conversation\n  \
/quit         leave (as does end of input)\n\
A turn that fails (an unreadable image, a conversation past the model's context) is \
reported and left out of the conversation; the session goes on.\n\n",
    generation_config_help!(),
    "\n\nExamples:\n  illume chat --image cat.png \"What is in this picture?\"      (demo model)\n  \
illume chat --model ILLUME-MLLM/illume_plus-qwen2_5-3b --image a.png --image b.png\n  \
printf '/image cat.png\\nWhat is it?\\nWhat colour is it?\\n' | illume chat --json"
))]
pub struct Args {
    #[command(flatten)]
    pub models: ModelArgs,
    /// An image for the first message (repeatable, in order).
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// The message; without it, an interactive session on stdin.
    pub message: Option<String>,
    #[command(flatten)]
    pub text: TextArgs,
}

/// A conversation: its turns, and the images of its user turns in order.
#[derive(Default)]
struct Conversation {
    turns: Vec<Turn>,
    images: Vec<RgbImage>,
}

pub fn run(args: Args, compute: super::Compute, json: bool) -> super::CliResult {
    let mut pending = Vec::with_capacity(args.images.len());
    for path in &args.images {
        pending.push(image_io::read_rgb(path)?);
    }
    let pipeline = compute.open(args.models.builder())?;
    let mut conversation = Conversation::default();
    if let Some(message) = &args.message {
        return answer(&pipeline, &mut conversation, message, pending, &args, json)
            .map_err(Into::into);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!("type a message; /image PATH attaches an image, /reset, /quit");
    }
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let line = line.trim();
        match line.split_once(' ').unwrap_or((line, "")) {
            ("", _) => {}
            ("/quit" | "/exit", _) => break,
            ("/reset", _) => {
                conversation = Conversation::default();
                pending.clear();
                eprintln!("(new conversation)");
            }
            ("/image", path) => match attach(path.trim()) {
                Ok(image) => {
                    pending.push(image);
                    eprintln!("(image {} attached to the next message)", pending.len());
                }
                Err(e) => eprintln!("error: {e}"),
            },
            (command, _) if command.starts_with('/') => {
                eprintln!("error: unknown command {command}: /image PATH, /reset, /quit")
            }
            _ => {
                let images = std::mem::take(&mut pending);
                if let Err(e) = answer(&pipeline, &mut conversation, line, images, &args, json) {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    Ok(())
}

fn attach(path: &str) -> Result<RgbImage, String> {
    if path.is_empty() {
        return Err("/image needs a path".into());
    }
    image_io::read_rgb(Path::new(path)).map_err(|e| e.to_string())
}

/// Answer `message` (with `images`) in `conversation`; on success both join it.
fn answer(
    pipeline: &Pipeline,
    conversation: &mut Conversation,
    message: &str,
    images: Vec<RgbImage>,
    args: &Args,
    json: bool,
) -> Result<(), String> {
    let mut turns = conversation.turns.clone();
    turns.push(Turn::user(message, images.len()));
    let mut all_images = conversation.images.clone();
    all_images.extend(images);
    let mut request = ChatRequest::new(turns, all_images);
    request.text = args.text.request();
    let answer = pipeline
        .chat(&request, &mut Progress::new(json))
        .map_err(|e| e.to_string())?;
    if json {
        let mut value = answer_json(&answer);
        value["turn"] = json!(request.turns.len() / 2 + 1);
        print_json(&value).map_err(|e| e.to_string())?;
    } else {
        println!();
        eprintln!("{}", answer_timing(&answer));
    }
    conversation.turns = request.turns;
    conversation.turns.push(Turn::assistant(answer.text));
    conversation.images = request.images;
    Ok(())
}
