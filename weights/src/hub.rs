//! Offline resolution of Hugging Face repo ids to a local snapshot folder.

use std::path::{Path, PathBuf};

use crate::error::WeightsError;

/// Hugging Face hub cache folders, in the order `huggingface_hub` itself uses them.
fn cache_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        roots.push(PathBuf::from(dir));
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        roots.push(PathBuf::from(home).join("hub"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".cache/huggingface/hub"));
    }
    roots
}

fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// The snapshot a cached repo points at: `refs/main`, else the newest snapshot.
fn snapshot_of(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo_dir.join("refs/main")) {
        let dir = snapshots.join(rev.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

/// A local path as given, or the cached snapshot of a repo id such as
/// `ILLUME-MLLM/dualvitok`. Never touches the network.
pub fn resolve_path(given: &Path) -> Result<PathBuf, WeightsError> {
    if given.exists() {
        return Ok(given.to_path_buf());
    }
    let text = given.to_string_lossy();
    if !looks_like_repo_id(&text) {
        return Err(WeightsError::NotFound {
            path: given.to_path_buf(),
            hint: "no such file or directory".into(),
        });
    }
    let folder = format!("models--{}", text.replace('/', "--"));
    let roots = cache_roots();
    for root in &roots {
        if let Some(snapshot) = snapshot_of(&root.join(&folder)) {
            return Ok(snapshot);
        }
    }
    let searched: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(WeightsError::NotFound {
        path: given.to_path_buf(),
        hint: format!(
            "not a local path, and repo `{text}` is not in the Hugging Face cache (searched {}); \
             download it first, e.g. `huggingface-cli download {text}`",
            searched.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_owner_slash_name() {
        assert!(looks_like_repo_id("ILLUME-MLLM/dualvitok"));
        assert!(!looks_like_repo_id("./dualvitok"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
    }

    #[test]
    fn finds_snapshot_through_refs_main() {
        let root = std::env::temp_dir().join(format!("illume-hub-test-{}", std::process::id()));
        let repo = root.join("models--ILLUME-MLLM--dualvitok");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(snapshot_of(&repo), Some(repo.join("snapshots/abc123")));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
