//! The embedded demo model: the tiny configuration of the reference fixtures with
//! deterministic weights, written at first use to a cache folder in the official formats and
//! then loaded like any downloaded checkpoint.
//!
//! Demo weights are random: the demo runs every stage of the pipeline, quickly and offline,
//! but its images and text are meaningless.

use std::path::{Path, PathBuf};

/// What the CLI prints whenever a verb runs on demo weights.
pub const NOTICE: &str = "note: no weights given, running the built-in DEMO model (tiny, random \
weights): output is meaningless. Download the official checkpoints and pass them instead:\n  \
--model ILLUME-MLLM/illume_plus-qwen2_5-3b --tokenizer ILLUME-MLLM/dualvitok \
--diffusion ILLUME-MLLM/dualvitok-sdxl-decoder\n(local paths, or repo ids found in the Hugging \
Face cache; nothing is downloaded)";

/// Bump when the demo configuration or weight synthesis changes, so old caches are rebuilt.
const DEMO_VERSION: &str = "v1";

/// Root of illume-rs's cache: `$ILLUME_CACHE`, else `$XDG_CACHE_HOME/illume-rs`, else
/// `~/.cache/illume-rs`, else a folder under the system temp dir.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("ILLUME_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("illume-rs");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/illume-rs");
    }
    std::env::temp_dir().join("illume-rs")
}

/// The folder of demo component `name`, written by `write` on first use. A `complete`
/// marker is written last, so an interrupted first run is redone rather than half-used.
pub fn materialize<E>(
    name: &str,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, Box<dyn std::error::Error>>
where
    E: std::error::Error + 'static,
{
    let dir = cache_root().join(format!("demo-{DEMO_VERSION}")).join(name);
    let marker = dir.join("complete");
    if !marker.is_file() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the demo cache {}: {e}", dir.display()))?;
        write(&dir).map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
        std::fs::write(&marker, b"")
            .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    }
    Ok(dir)
}
