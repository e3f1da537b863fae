//! Fuzzing the checkpoint readers (issue 14): every mutated checkpoint must give `Ok` or
//! `Err` — never a panic, never a crash, never an allocation out of proportion to the file.
//!
//! Stable Rust and no fuzzing crate: a seeded splitmix64 generator drives byte-level
//! mutations (bit flips, interesting bytes and integers, truncation, deletion, duplication,
//! insertion, splicing from another seed) and structure-aware ones (safetensors JSON headers:
//! dtypes, shapes, offsets, names, duplicate keys, the length prefix; zip entries; pickle
//! opcodes and their operands; regenerated `data.pkl` state dicts with hostile views; shard
//! indexes; config JSON). Seeds are the fixture checkpoints (`ILLUME_FIXTURES`, else
//! `tests/fixtures`, shrunk to their smallest tensors, plus the full torch file and the full
//! DualViTok safetensors), `weights/tests/data/*.bin`, and small files written here.
//!
//! Each case is written to a scratch directory and given to `inspect`, `Checkpoint::open`,
//! `data` and `float` of every tensor, and `unwrap_state_dict` + `load_into` a tiny module.
//! A counting global allocator records the peak live bytes of each case; the growth must stay
//! under [`allocation_bound`]. Cases run in a child process (this test binary again, filtered
//! to this test) so that an abort — an allocation over [`HARD_LIMIT`] refused by the
//! allocator, a stack overflow, a double free — is reported with its case like a panic is,
//! and the run goes on after it.
//!
//! `ILLUME_FUZZ_ITERATIONS` (default [`DEFAULT_ITERATIONS`]), `ILLUME_FUZZ_SEED` (default
//! fixed, so CI runs the same cases), `ILLUME_FUZZ_FROM` (first iteration: a finding is
//! replayed with `ILLUME_FUZZ_FROM=<iteration> ILLUME_FUZZ_ITERATIONS=1` and its seed).
//! The worker alone (`ILLUME_FUZZ_WORKER=<dir>`, plus `ILLUME_FUZZ_VERBOSE=1` for each case's
//! peak growth) prints every case's mutations on stdout.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Cursor, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::DType;
use burn_ndarray::NdArray;
use illume_weights::{Checkpoint, LoadOptions};
use serde_json::{json, Value};

const DEFAULT_ITERATIONS: u64 = 3000;
const DEFAULT_SEED: u64 = 0x1117_5eed;
/// The test's own name: the child process runs exactly this test.
const TEST_NAME: &str = "fuzz_checkpoint_readers";
/// Set (to the scratch directory) in the child process that runs the cases.
const WORKER_ENV: &str = "ILLUME_FUZZ_WORKER";
/// A case running longer than this is reported as a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);
/// The run stops after this many distinct findings.
const MAX_FINDINGS: usize = 20;

// ---- allocation accounting ----

/// `System`, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CASE_BASE: AtomicUsize = AtomicUsize::new(0);
static CASE_ACTIVE: AtomicBool = AtomicBool::new(false);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// While a case runs, an allocation that would take its live growth past this is refused
/// (the allocation fails, the child aborts, and the parent reports the case) rather than
/// letting a hostile size exhaust the machine. Far above [`allocation_bound`] of any seed.
const HARD_LIMIT: usize = 1 << 30;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

impl Counting {
    fn grow(size: usize) -> bool {
        let live = LIVE.fetch_add(size, Relaxed) + size;
        if CASE_ACTIVE.load(Relaxed) && live.saturating_sub(CASE_BASE.load(Relaxed)) > HARD_LIMIT {
            LIVE.fetch_sub(size, Relaxed);
            REFUSED.fetch_max(size, Relaxed);
            refusal_note(size);
            return false;
        }
        PEAK.fetch_max(live, Relaxed);
        true
    }
}

/// Written without allocating: we are inside the allocator.
fn refusal_note(size: usize) {
    let mut buf = [0u8; 200];
    let mut w = &mut buf[..];
    let _ = writeln!(
        w,
        "fuzz: refused an allocation of {size} bytes (the case would hold over {HARD_LIMIT} bytes)"
    );
    let n = 200 - w.len();
    let _ = std::io::stderr().write_all(&buf[..n]);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added, and a
// refused request returns null as the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !Self::grow(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Relaxed);
        }
        p
    }
}

fn begin_case() {
    let live = LIVE.load(Relaxed);
    CASE_BASE.store(live, Relaxed);
    PEAK.store(live, Relaxed);
    REFUSED.store(0, Relaxed);
    CASE_ACTIVE.store(true, Relaxed);
}

/// (peak growth over the live bytes at the start, largest refused request).
fn end_case() -> (usize, usize) {
    CASE_ACTIVE.store(false, Relaxed);
    (
        PEAK.load(Relaxed).saturating_sub(CASE_BASE.load(Relaxed)),
        REFUSED.load(Relaxed),
    )
}

/// What one case may allocate at its peak beyond what was live before it: 4 MiB (lazy
/// statics, error messages, the first tensor built on the ndarray backend) plus 10 x the
/// bytes of its input files (a tensor read as stored, plus its cast to f32 and the backend's
/// copy: u8/bool data grows 4x). Measured: the seeds and their mutants peak at 5-70 KiB over
/// inputs of 0.2-26 KiB, and at 1.6 / 4 MB for the 9 MB fixtures. A file that declares more
/// than it holds (a 600-byte torch file whose views expand to gigabytes) must not get past it.
fn allocation_bound(input_bytes: usize) -> usize {
    (4 << 20) + 10 * input_bytes
}

// ---- seeded randomness ----

struct Rng(u64);

impl Rng {
    /// Each case has its own stream, so any one case replays alone.
    fn for_case(seed: u64, iteration: u64) -> Self {
        let mut r = Rng(seed ^ iteration.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    6,
    7,
    8,
    16,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    -0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 53,
    1 << 62,
    i64::MAX,
    i64::MIN,
];

const INTERESTING_BYTES: &[u8] = &[
    0, 0xff, 0x7f, 0x80, 1, b'.', b'"', b'{', b'}', b'[', b']', b'9', b'-', b'\\', b'\n', b'P',
    b'K', b'(', b't', b'R',
];

// ---- seeds ----

#[derive(Clone)]
struct Seed {
    name: String,
    /// (path relative to the case directory, bytes).
    files: Vec<(String, Vec<u8>)>,
    /// What is opened, relative to the case directory ("" for the directory itself).
    open: String,
    /// Relative frequency of this seed.
    weight: usize,
}

impl Seed {
    fn file(name: &str, file: &str, bytes: Vec<u8>) -> Self {
        Seed {
            name: name.into(),
            files: vec![(file.into(), bytes)],
            open: file.into(),
            weight: 6,
        }
    }

    fn bytes(&self) -> usize {
        self.files.iter().map(|(_, b)| b.len()).sum()
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn safetensors_file(
    tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .expect("a consistent tensor");
            (*name, view)
        })
        .collect();
    safetensors::serialize(views, metadata).expect("serializable")
}

/// The smallest tensors of a safetensors file (at most `budget` data bytes, 32 tensors),
/// with its metadata: a real header's names and dtypes at a size that fuzzes quickly.
fn shrink_safetensors(bytes: &[u8], budget: usize) -> Option<Vec<u8>> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok()?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let mut tensors = st.tensors();
    tensors.sort_by(|(a, x), (b, y)| (x.data().len(), a).cmp(&(y.data().len(), b)));
    let mut kept = Vec::new();
    let mut total = 0;
    for (name, view) in tensors {
        if kept.len() == 32 || total + view.data().len() > budget {
            break;
        }
        total += view.data().len();
        kept.push((name, view));
    }
    safetensors::serialize(kept, metadata.metadata().clone()).ok()
}

fn zip_bytes(
    entries: &[(String, Vec<u8>)],
    options: &[zip::write::SimpleFileOptions],
) -> Option<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (i, (name, bytes)) in entries.iter().enumerate() {
        zip.start_file(name.as_str(), options.get(i).copied().unwrap_or(stored))
            .ok()?;
        zip.write_all(bytes).ok()?;
    }
    Some(zip.finish().ok()?.into_inner())
}

fn tiny_torch() -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}(").str("proj.weight");
    p.tensor("0", "FloatStorage", 6, 0, &[2, 3], &[3, 1]);
    p.str("proj.bias");
    p.tensor("1", "FloatStorage", 2, 0, &[2], &[1]);
    p.op(b"u.");
    zip_bytes(
        &[
            ("archive/data.pkl".into(), p.0),
            ("archive/byteorder".into(), b"little".to_vec()),
            (
                "archive/data/0".into(),
                f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            ),
            ("archive/data/1".into(), f32_bytes(&[0.5, -0.5])),
        ],
        &[],
    )
    .expect("zip")
}

/// Nested under `state_dict`, a transposed view, a `_rebuild_parameter`, shared storage,
/// and a Long tensor.
fn tiny_torch_views() -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"}").str("state_dict").op(b"}(");
    p.str("proj.weight");
    p.tensor("0", "FloatStorage", 6, 0, &[2, 3], &[1, 2]);
    p.str("proj.bias");
    p.global("torch._utils", "_rebuild_parameter").op(b"(");
    p.tensor("1", "HalfStorage", 4, 2, &[2], &[1]);
    p.op(b"\x88");
    p.global("collections", "OrderedDict").op(b")Rt").op(b"R");
    p.str("proj.shared");
    p.tensor("0", "FloatStorage", 6, 3, &[3], &[1]);
    p.str("steps");
    p.tensor("2", "LongStorage", 1, 0, &[], &[]);
    p.op(b"us.");
    let half: Vec<u8> = [0.0f32, 1.0, 0.5, -0.5]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    zip_bytes(
        &[
            ("checkpoint/data.pkl".into(), p.0),
            (
                "checkpoint/data/0".into(),
                f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
            ),
            ("checkpoint/data/1".into(), half),
            ("checkpoint/data/2".into(), 7i64.to_le_bytes().to_vec()),
        ],
        &[],
    )
    .expect("zip")
}

fn fixture_root() -> PathBuf {
    match std::env::var_os("ILLUME_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures"),
    }
}

fn files_under(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = read.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rel_name = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if path.is_dir() {
            files_under(&path, &rel_name, out);
        } else {
            out.push((rel_name, path));
        }
    }
}

/// Seeds from the fixture tree: each safetensors file shrunk; each component folder as a
/// directory (configs plus shrunk weights, for `inspect`'s layouts); the full torch files
/// and the full largest-header `model.safetensors` as rare large seeds.
fn fixture_seeds(out: &mut Vec<Seed>) {
    let root = fixture_root();
    let Ok(read) = std::fs::read_dir(&root) else {
        println!(
            "fuzz: no fixtures at {}; fuzzing the crafted seeds only",
            root.display()
        );
        return;
    };
    let mut components: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
    components.sort();
    for dir in components.into_iter().filter(|d| d.is_dir()) {
        let component = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files = Vec::new();
        files_under(&dir, "", &mut files);
        let mut dir_seed = Seed {
            name: format!("fixture {component}/ (directory)"),
            files: Vec::new(),
            open: String::new(),
            weight: 4,
        };
        for (rel, path) in files {
            let size = std::fs::metadata(&path)
                .map(|m| m.len())
                .unwrap_or(u64::MAX);
            let name = format!("fixture {component}/{rel}");
            if rel.ends_with(".json") && size <= 64 << 10 {
                dir_seed.files.push((rel, std::fs::read(&path).unwrap()));
            } else if rel.ends_with(".safetensors") && size <= 64 << 20 {
                let bytes = std::fs::read(&path).unwrap();
                if let Some(small) = shrink_safetensors(&bytes, 16 << 10) {
                    out.push(Seed::file(
                        &format!("{name} (shrunk)"),
                        "model.safetensors",
                        small.clone(),
                    ));
                    if !rel.ends_with("io.safetensors") {
                        dir_seed.files.push((rel.clone(), small));
                    }
                }
                if rel == "model.safetensors" && component == "dualvitok" && size <= 16 << 20 {
                    let mut big = Seed::file(&name, "model.safetensors", bytes);
                    big.weight = 1;
                    out.push(big);
                }
            } else if rel.ends_with(".bin") && size <= 16 << 20 {
                let mut big = Seed::file(&name, "pytorch_model.bin", std::fs::read(&path).unwrap());
                big.weight = 1;
                out.push(big);
            }
        }
        if dir_seed
            .files
            .iter()
            .any(|(n, _)| n.ends_with(".safetensors"))
        {
            out.push(dir_seed);
        }
    }
}

fn corpus() -> Vec<Seed> {
    use safetensors::Dtype as D;
    let weight = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let bias = f32_bytes(&[0.5, -0.5]);
    let half: Vec<u8> = (0..6)
        .flat_map(|i| half::f16::from_f32(i as f32).to_le_bytes())
        .collect();
    let mut seeds = vec![
        Seed::file(
            "tiny f32 safetensors",
            "model.safetensors",
            safetensors_file(
                &[
                    ("proj.weight", D::F32, vec![2, 3], weight.clone()),
                    ("proj.bias", D::F32, vec![2], bias.clone()),
                ],
                None,
            ),
        ),
        Seed::file(
            "tiny f16 safetensors with metadata and an i64",
            "model.safetensors",
            safetensors_file(
                &[
                    ("proj.weight", D::F16, vec![2, 3], half),
                    ("proj.bias", D::F32, vec![2], bias.clone()),
                    ("steps", D::I64, vec![3], vec![1; 24]),
                ],
                Some([("format".to_string(), "pt".to_string())].into()),
            ),
        ),
        Seed::file("tiny torch zip", "pytorch_model.bin", tiny_torch()),
        Seed::file(
            "tiny torch zip with views and a wrapper",
            "pytorch_model.bin",
            tiny_torch_views(),
        ),
        Seed {
            name: "sharded safetensors".into(),
            files: vec![
                (
                    "model.safetensors.index.json".into(),
                    serde_json::to_vec(&json!({
                        "metadata": {"total_size": 32},
                        "weight_map": {
                            "proj.weight": "model-00001-of-00002.safetensors",
                            "proj.bias": "model-00002-of-00002.safetensors",
                        }
                    }))
                    .unwrap(),
                ),
                (
                    "model-00001-of-00002.safetensors".into(),
                    safetensors_file(&[("proj.weight", D::F32, vec![2, 3], weight)], None),
                ),
                (
                    "model-00002-of-00002.safetensors".into(),
                    safetensors_file(&[("proj.bias", D::F32, vec![2], bias)], None),
                ),
            ],
            open: "model.safetensors.index.json".into(),
            weight: 6,
        },
    ];
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for name in ["legacy.bin", "transposed.bin", "slice.bin"] {
        if let Ok(bytes) = std::fs::read(data.join(name)) {
            seeds.push(Seed::file(
                &format!("tests/data/{name}"),
                "pytorch_model.bin",
                bytes,
            ));
        }
    }
    fixture_seeds(&mut seeds);
    seeds
}

// ---- crafted pickles ----

/// Protocol-2 pickle bytes, written opcode by opcode (as in tests/hostile.rs).
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Pickle(vec![0x80, 2])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }
    /// Any i64, as LONG1 (8 bytes, two's complement).
    fn int(&mut self, v: i64) -> &mut Self {
        self.op(&[0x8a, 8]).op(&v.to_le_bytes())
    }
    fn ints(&mut self, items: &[i64]) -> &mut Self {
        self.op(b"(");
        for v in items {
            self.int(*v);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, size,
    /// stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        key: &str,
        class: &str,
        numel: i64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(").str("storage").global("torch", class);
        self.str(key).str("cpu").int(numel).op(b"tQ");
        self.int(offset).ints(shape).ints(stride).op(b"\x89");
        self.global("collections", "OrderedDict").op(b")R");
        self.op(b"tR")
    }
}

const STORAGE_CLASSES: &[(&str, usize)] = &[
    ("FloatStorage", 4),
    ("HalfStorage", 2),
    ("BFloat16Storage", 2),
    ("DoubleStorage", 8),
    ("LongStorage", 8),
    ("IntStorage", 4),
    ("ShortStorage", 2),
    ("CharStorage", 1),
    ("ByteStorage", 1),
    ("BoolStorage", 1),
];

fn contiguous(shape: &[i64]) -> Vec<i64> {
    let mut stride = vec![1i64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        stride[d] = stride[d + 1].saturating_mul(shape[d + 1].max(1));
    }
    stride
}

/// Elements of storage a view reaches (`None` when it overflows or goes negative).
fn span(offset: i64, shape: &[i64], stride: &[i64]) -> Option<i64> {
    if shape.contains(&0) {
        return Some(0);
    }
    let mut last = offset;
    for (&size, &step) in shape.iter().zip(stride) {
        last = last.checked_add(size.checked_sub(1)?.checked_mul(step)?)?;
    }
    last.checked_add(1).filter(|n| *n >= 0)
}

/// A fresh state dict of 1-3 tensors whose storage classes, offsets, sizes, strides and
/// declared storage sizes are drawn from ordinary and hostile values (zero and huge strides,
/// huge sizes, overflowing offsets, shared and missing storages), with storage entries
/// sized to match (mostly).
fn generate_state_dict(prefix: &str, rng: &mut Rng) -> (String, Vec<(String, Vec<u8>)>) {
    const DIMS: &[i64] = &[
        8,
        255,
        65536,
        1 << 20,
        1 << 24,
        1 << 28,
        1 << 31,
        1 << 32,
        1 << 40,
        1 << 62,
        i64::MAX,
        -1,
        i64::MIN,
    ];
    const EXPANDED: &[i64] = &[
        2,
        1 << 10,
        1 << 16,
        1 << 20,
        1 << 24,
        1 << 28,
        1 << 31,
        1 << 40,
    ];
    const STRIDES: &[i64] = &[0, 1, 2, 3, 7, 1 << 20, 1 << 32, 1 << 62, i64::MAX, -1];
    const OFFSETS: &[i64] = &[1, 2, 5, 6, 1 << 31, 1 << 62, i64::MAX, -1, i64::MIN];
    const NUMELS: &[i64] = &[
        0,
        1,
        2,
        5,
        6,
        7,
        1 << 20,
        1 << 29,
        1 << 31,
        1 << 32,
        1 << 61,
        i64::MAX,
        -1,
    ];
    let mut p = Pickle::new();
    let wrapper = rng
        .chance(1, 5)
        .then(|| rng.pick(&["state_dict", "model", "ema"]));
    if let Some(w) = wrapper {
        p.op(b"}").str(w);
    }
    p.op(b"}(");
    let mut storages: Vec<(String, &str, usize, i64)> = Vec::new();
    let mut desc = Vec::new();
    let count = if rng.chance(1, 2) {
        1
    } else {
        2 + rng.below(2)
    };
    for t in 0..count {
        let name = rng.pick(&["proj.weight", "proj.bias", "t", "a.b", ""]);
        let (class, es) = if rng.chance(1, 2) {
            STORAGE_CLASSES[0]
        } else {
            rng.pick(STORAGE_CLASSES)
        };
        // A valid view, then (mostly) one hostile twist of it.
        let rank = rng.below(4);
        let mut shape: Vec<i64> = (0..rank).map(|_| 1 + rng.below(4) as i64).collect();
        let mut stride = contiguous(&shape);
        let mut offset = 0i64;
        let mut declared = None;
        match rng.below(12) {
            // An expanded dim (stride 0), as torch writes for `expand`: valid, and as large
            // as the pickle says while the storage stays small.
            0 | 1 if rank > 0 => {
                let d = rng.below(rank);
                shape[d] = rng.pick(EXPANDED);
                stride[d] = 0;
            }
            2 if rank > 0 => {
                let d = rng.below(rank);
                shape[d] = rng.pick(DIMS);
                stride = contiguous(&shape);
            }
            3 if rank > 0 => {
                let d = rng.below(rank);
                stride[d] = rng.pick(STRIDES);
            }
            4 => {
                stride = vec![0; rank];
                for size in shape.iter_mut() {
                    if rng.chance(1, 2) {
                        *size = rng.pick(EXPANDED);
                    }
                }
            }
            5 => offset = rng.pick(OFFSETS),
            6 => declared = Some(rng.pick(NUMELS)),
            7 if rank > 0 => shape[rng.below(rank)] = 0,
            8 => stride.push(1),
            _ => {}
        }
        let reuse = !storages.is_empty() && rng.chance(1, 5);
        let (key, class, es) = if reuse {
            let (k, c, e, _) = storages[rng.below(storages.len())].clone();
            if rng.chance(1, 2) {
                (k, c, e)
            } else {
                (k, class, es)
            }
        } else {
            (t.to_string(), class, es)
        };
        let numel = declared.unwrap_or_else(|| span(offset, &shape, &stride).unwrap_or(1));
        p.str(name);
        let parameter = rng.chance(1, 10);
        if parameter {
            p.global("torch._utils", "_rebuild_parameter").op(b"(");
        }
        p.tensor(&key, class, numel, offset, &shape, &stride);
        if parameter {
            p.op(b"\x88")
                .global("collections", "OrderedDict")
                .op(b")Rt")
                .op(b"R");
        }
        if !reuse {
            storages.push((key.clone(), class, es, numel));
        }
        desc.push(format!(
            "`{name}` {class}[{numel}] key {key} offset {offset} size {shape:?} stride {stride:?}"
        ));
    }
    p.op(b"u");
    if wrapper.is_some() {
        p.op(b"s");
    }
    p.op(b".");
    let mut entries = vec![(format!("{prefix}data.pkl"), p.0)];
    if rng.chance(1, 2) {
        entries.push((format!("{prefix}byteorder"), b"little".to_vec()));
    }
    for (key, class, es, numel) in storages {
        let exact = u64::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(es as u64))
            .filter(|n| *n <= 1 << 20);
        let len = match exact {
            Some(n) if rng.chance(9, 10) => n as usize,
            Some(n) => (n as usize + 1).saturating_sub(rng.below(3)),
            None => rng.below(64),
        };
        if rng.chance(1, 20) {
            desc.push(format!("storage {key} left out"));
            continue;
        }
        // Small bytes keep floats finite (exponent bits low) and bools 0/1, mostly.
        let mask = if class == "BoolStorage" && rng.chance(9, 10) {
            1
        } else {
            0x3f
        };
        let bytes = (0..len).map(|_| rng.next() as u8 & mask).collect();
        entries.push((format!("{prefix}data/{key}"), bytes));
    }
    (desc.join("; "), entries)
}

// ---- pickle opcodes ----

struct Op {
    at: usize,
    code: u8,
    arg: Range<usize>,
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | *b as u64)
}

/// The opcodes of one or more consecutive pickles, with their operand bytes; stops at the
/// first byte that is not an opcode (the raw storages of a legacy file, or damage).
fn pickle_ops(b: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() && ops.len() < 1 << 20 {
        let code = b[pos];
        let a = pos + 1;
        let fixed = |n: usize| Some(a..a + n);
        let counted = |w: usize| {
            let n = usize::try_from(le(b.get(a..a + w)?)).ok()?;
            Some(a..(a + w).checked_add(n)?)
        };
        let lines = |k: usize| {
            let mut end = a;
            for _ in 0..k {
                end += b.get(end..)?.iter().position(|&c| c == b'\n')? + 1;
            }
            Some(a..end)
        };
        let arg = match code {
            b'('
            | b'.'
            | b'0'
            | b'1'
            | b'2'
            | b'N'
            | b'R'
            | b'a'
            | b'b'
            | b'd'
            | b'e'
            | b'l'
            | b's'
            | b't'
            | b'u'
            | b'}'
            | b']'
            | b')'
            | b'Q'
            | b'o'
            | 0x81
            | 0x85..=0x89
            | 0x8f..=0x94 => Some(a..a),
            b'K' | b'q' | b'h' | 0x80 | 0x82 => fixed(1),
            b'M' | 0x83 => fixed(2),
            b'J' | b'r' | b'j' | 0x84 => fixed(4),
            b'G' | 0x95 => fixed(8),
            b'X' | b'T' | b'B' | 0x8b => counted(4),
            b'U' | b'C' | 0x8a | 0x8c => counted(1),
            0x8d | 0x8e => counted(8),
            b'c' | b'i' => lines(2),
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' | b'g' | b'p' => lines(1),
            _ => None,
        };
        let Some(arg) = arg.filter(|r| r.end <= b.len()) else {
            break;
        };
        pos = arg.end;
        ops.push(Op {
            at: a - 1,
            code,
            arg,
        });
    }
    ops
}

const NO_ARG_OPS: &[u8] = b"(.012NRabdelstu}])Q\x85\x86\x87\x88\x89\x81\x93\x94";

/// Change one opcode of a pickle (stream): an integer or string operand, a memo index, the
/// opcode itself; or delete, duplicate, swap or insert an opcode.
fn mutate_pickle(b: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
    const STRINGS: &[&str] = &[
        "FloatStorage",
        "HalfStorage",
        "BFloat16Storage",
        "DoubleStorage",
        "LongStorage",
        "BoolStorage",
        "ByteStorage",
        "QInt8Storage",
        "storage",
        "cpu",
        "0",
        "1",
        "99",
        "proj.weight",
        "proj.bias",
        "",
        "_rebuild_tensor_v2",
        "OrderedDict",
    ];
    const GLOBALS: &[(&str, &str)] = &[
        ("torch", "FloatStorage"),
        ("torch", "HalfStorage"),
        ("torch", "BoolStorage"),
        ("torch", "LongStorage"),
        ("torch", "QInt8Storage"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Tensor"),
        ("torch", "Size"),
        ("collections", "OrderedDict"),
        ("posix", "system"),
        ("builtins", "eval"),
    ];
    let ops = pickle_ops(b);
    if ops.is_empty() {
        return None;
    }
    let of = |codes: &[u8]| -> Vec<usize> {
        (0..ops.len())
            .filter(|&i| codes.contains(&ops[i].code))
            .collect()
    };
    let choose = |candidates: Vec<usize>, rng: &mut Rng| {
        if candidates.is_empty() {
            rng.below(ops.len())
        } else {
            candidates[rng.below(candidates.len())]
        }
    };
    let kind = rng.below(8);
    let i = match kind {
        0 => choose(of(b"KMJ\x8a"), rng),
        1 => choose(of(b"Xc\x8c"), rng),
        2 => choose(of(b"hqjr"), rng),
        3 => choose(of(NO_ARG_OPS), rng),
        _ => rng.below(ops.len()),
    };
    let op = &ops[i];
    let whole = op.at..op.arg.end;
    let (replacement, what): (Vec<u8>, String) = match kind {
        0 => {
            let v = if rng.chance(1, 4) {
                rng.below(8) as i64
            } else {
                rng.pick(INTERESTING)
            };
            let mut p = Pickle(Vec::new());
            p.int(v);
            (p.0, format!("int operand := {v}"))
        }
        1 if op.code == b'c' => {
            let (m, n) = rng.pick(GLOBALS);
            (
                format!("c{m}\n{n}\n").into_bytes(),
                format!("global := {m}.{n}"),
            )
        }
        1 => {
            let s = if rng.chance(1, 10) {
                "x".repeat(1000)
            } else {
                rng.pick(STRINGS).to_string()
            };
            let mut p = Pickle(Vec::new());
            p.str(&s);
            (p.0, format!("string := {:?}", &s[..s.len().min(20)]))
        }
        2 => {
            let idx = rng.pick(&[0u32, 1, 2, 3, 255, 256, 1 << 20, u32::MAX]);
            let mut out = vec![b'j'];
            out.extend_from_slice(&idx.to_le_bytes());
            if matches!(op.code, b'q' | b'r') {
                out[0] = b'r';
            }
            (out, format!("memo index := {idx}"))
        }
        3 => {
            let c = rng.pick(NO_ARG_OPS);
            (vec![c], format!("opcode := 0x{c:02x}"))
        }
        4 => (Vec::new(), "deleted".into()),
        5 => {
            let mut twice = b[whole.clone()].to_vec();
            twice.extend_from_slice(&b[whole.clone()]);
            (twice, "duplicated".into())
        }
        6 if i + 1 < ops.len() => {
            let next = &ops[i + 1];
            let mut swapped = b[next.at..next.arg.end].to_vec();
            swapped.extend_from_slice(&b[whole.clone()]);
            let whole = op.at..next.arg.end;
            let desc = format!(
                "pickle op 0x{:02x} at byte {} swapped with the next",
                op.code, op.at
            );
            b.splice(whole, swapped);
            return Some(desc);
        }
        _ => {
            let c = rng.pick(NO_ARG_OPS);
            let mut out = vec![c];
            out.extend_from_slice(&b[whole.clone()]);
            (out, format!("opcode 0x{c:02x} inserted before"))
        }
    };
    let desc = format!("pickle op 0x{:02x} at byte {}: {what}", op.code, op.at);
    b.splice(whole, replacement);
    Some(desc)
}

// ---- byte-level mutations ----

/// Regions worth most of the mutations: a safetensors header, a zip's pickle and central
/// directory. Empty means the whole file.
fn hot_ranges(name: &str, b: &[u8]) -> Vec<Range<usize>> {
    if name.ends_with(".safetensors") && b.len() >= 8 {
        let n = le(&b[..8]).min(b.len() as u64 - 8) as usize;
        return std::iter::once(0..8 + n).collect();
    }
    if b.starts_with(b"PK\x03\x04") && b.len() > 64 << 10 {
        let mut hot: Vec<Range<usize>> = std::iter::once(b.len() - (16 << 10)..b.len()).collect();
        if let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(b)) {
            for i in 0..archive.len() {
                if let Ok(e) = archive.by_index_raw(i) {
                    if e.name().ends_with(".pkl") {
                        if let Some(start) = e.data_start() {
                            let end = start
                                .saturating_add(e.compressed_size())
                                .min(b.len() as u64);
                            hot.push(start as usize..end as usize);
                        }
                    }
                }
            }
        }
        return hot;
    }
    Vec::new()
}

fn mutate_bytes(name: &str, b: &mut Vec<u8>, rng: &mut Rng, donor: &[u8]) -> String {
    let hot = hot_ranges(name, b);
    let pos = |rng: &mut Rng, len: usize| -> usize {
        if !hot.is_empty() && rng.chance(9, 10) {
            let r = &hot[rng.below(hot.len())];
            (r.start + rng.below(r.len().max(1))).min(len.saturating_sub(1))
        } else {
            rng.below(len)
        }
    };
    let len = b.len();
    if len == 0 {
        let k = 1 + rng.below(16);
        b.extend((0..k).map(|_| rng.next() as u8));
        return format!("{k} random bytes into an empty file");
    }
    let span_len = |rng: &mut Rng| {
        if rng.chance(3, 4) {
            1 + rng.below(16)
        } else {
            1 + rng.below(len.clamp(1, 4096))
        }
    };
    match rng.below(11) {
        0 => {
            let p = pos(rng, len);
            let bit = rng.below(8);
            b[p] ^= 1 << bit;
            format!("bit {bit} of byte {p} flipped")
        }
        1 => {
            let p = pos(rng, len);
            let v = rng.pick(INTERESTING_BYTES);
            b[p] = v;
            format!("byte {p} := 0x{v:02x}")
        }
        2 => {
            let p = pos(rng, len);
            let width = rng.pick(&[1usize, 2, 4, 8]);
            let v = match rng.below(4) {
                0 => len as i64,
                1 => len as i64 - rng.below(16) as i64,
                _ => rng.pick(INTERESTING),
            };
            let bytes = v.to_le_bytes();
            let end = (p + width).min(len);
            b[p..end].copy_from_slice(&bytes[..end - p]);
            format!("{width}-byte integer {v} written at {p}")
        }
        3 => {
            let at = if rng.chance(1, 2) {
                pos(rng, len)
            } else {
                len - 1 - rng.below(len.min(16))
            };
            b.truncate(at);
            format!("truncated to {at} bytes")
        }
        4 => {
            let p = pos(rng, len);
            let k = span_len(rng).min(len - p);
            b.drain(p..p + k);
            format!("{k} bytes deleted at {p}")
        }
        5 => {
            let p = pos(rng, len);
            let k = span_len(rng).min(len - p);
            let copy = b[p..p + k].to_vec();
            let to = pos(rng, len);
            b.splice(to..to, copy);
            format!("bytes {p}..{} duplicated at {to}", p + k)
        }
        6 => {
            let p = pos(rng, len);
            let k = span_len(rng);
            let fill = rng.pick(INTERESTING_BYTES);
            let random = rng.chance(1, 2);
            let bytes: Vec<u8> = (0..k)
                .map(|_| if random { rng.next() as u8 } else { fill })
                .collect();
            b.splice(p..p, bytes);
            format!(
                "{k} {} inserted at {p}",
                if random {
                    "random bytes".to_string()
                } else {
                    format!("bytes 0x{fill:02x}")
                }
            )
        }
        7 if !donor.is_empty() => {
            let from = rng.below(donor.len());
            let k = span_len(rng).min(donor.len() - from);
            let p = pos(rng, len);
            let end = (p + k).min(len);
            let overwrite = rng.chance(1, 2);
            let piece = donor[from..from + k].to_vec();
            if overwrite {
                b.splice(p..end, piece);
            } else {
                b.splice(p..p, piece);
            }
            format!(
                "{k} bytes of another seed (from {from}) {} at {p}",
                if overwrite { "written" } else { "inserted" }
            )
        }
        8 => {
            let p = pos(rng, len);
            let d = 1 + rng.below(35) as u8;
            let add = rng.chance(1, 2);
            b[p] = if add {
                b[p].wrapping_add(d)
            } else {
                b[p].wrapping_sub(d)
            };
            format!("byte {p} {} {d}", if add { "+" } else { "-" })
        }
        9 => {
            let p = pos(rng, len);
            let digits = rng.pick(&[
                "9999999999999999999999",
                "-1",
                "1e999",
                "0.5",
                "18446744073709551616",
            ]);
            b.splice(p..p, digits.bytes());
            format!("{digits:?} inserted at {p}")
        }
        _ => {
            // Swap two ranges of one length.
            let k = span_len(rng).min(len / 2).max(1);
            let a = rng.below(len - k + 1);
            let c = rng.below(len - k + 1);
            let (lo, hi) = (a.min(c), a.max(c));
            if hi >= lo + k {
                let (first, second) = b.split_at_mut(hi);
                first[lo..lo + k].swap_with_slice(&mut second[..k]);
            }
            format!("{k} bytes at {lo} and {hi} swapped")
        }
    }
}

// ---- structure-aware mutations ----

fn interesting_json(rng: &mut Rng) -> Value {
    match rng.below(14) {
        0 => json!(0),
        1 => json!(1),
        2 => json!(3),
        3 => json!(1u64 << 31),
        4 => json!(1u64 << 32),
        5 => json!(1u64 << 53),
        6 => json!(1u64 << 62),
        7 => json!(u64::MAX),
        8 => json!(-1),
        9 => json!(i64::MIN),
        10 => json!(1.5),
        11 => json!("2"),
        12 => Value::Null,
        _ => json!(rng.below(300)),
    }
}

fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "C64" | "F64" | "I64" | "U64" => 64,
        _ => return None,
    })
}

/// Give every tensor whose dtype and shape are meaningful (and at most 1 MiB) offsets that
/// fit, back to back, so that a changed dtype or shape gets past the offset checks to the
/// readers behind them.
fn relayout(map: &mut serde_json::Map<String, Value>, data: &mut Vec<u8>) {
    let mut order: Vec<(u64, String)> = map
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let begin = v["data_offsets"][0].as_u64().unwrap_or(u64::MAX);
            (begin, k.clone())
        })
        .collect();
    order.sort();
    let mut out = Vec::new();
    for (_, name) in order {
        let entry = &map[&name];
        let bits = entry["dtype"].as_str().and_then(dtype_bits);
        let numel = entry["shape"].as_array().and_then(|dims| {
            dims.iter()
                .try_fold(1u64, |n, d| n.checked_mul(d.as_u64()?))
        });
        let Some(bytes) = bits
            .zip(numel)
            .and_then(|(b, n)| n.checked_mul(b))
            .filter(|b| b % 8 == 0 && b / 8 <= 1 << 20)
            .map(|b| (b / 8) as usize)
        else {
            continue;
        };
        let old = entry["data_offsets"].as_array();
        let begin = old
            .and_then(|o| o.first())
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let start = out.len();
        for k in 0..bytes {
            out.push(
                begin
                    .checked_add(k)
                    .and_then(|i| data.get(i))
                    .map_or(0x3c, |b| *b),
            );
        }
        map[&name]["data_offsets"] = json!([start, start + bytes]);
    }
    *data = out;
}

/// Rewrite the JSON header of a safetensors file: a tensor's dtype, shape, offsets or name;
/// remove or duplicate a tensor; change the metadata; or lie in the length prefix.
fn mutate_safetensors(b: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
    const DTYPES: &[&str] = &[
        "F32", "F16", "BF16", "F64", "I8", "U8", "BOOL", "I16", "U16", "I32", "U32", "I64", "U64",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "F12", "", "f32",
    ];
    let n = usize::try_from(le(b.get(..8)?)).ok()?;
    let header = b.get(8..8usize.checked_add(n)?)?;
    let Value::Object(mut map) = serde_json::from_slice::<Value>(header).ok()? else {
        return None;
    };
    let mut data = b[8 + n..].to_vec();
    let names: Vec<String> = map
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let mut duplicate: Option<(String, Value)> = None;
    let mut prefix: Option<u64> = None;
    let mut consistent = false;
    let desc = if names.is_empty() {
        map.insert(
            "w".into(),
            json!({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}),
        );
        "a tensor `w` added".to_string()
    } else {
        let name = rng.pick(&names);
        let entry = map.get_mut(&name).filter(|e| e.is_object())?;
        match rng.below(9) {
            0 => {
                let dtype = if rng.chance(1, 10) {
                    json!(5)
                } else {
                    json!(rng.pick(DTYPES))
                };
                entry["dtype"] = dtype.clone();
                consistent = rng.chance(2, 3);
                format!("dtype of `{name}` := {dtype}")
            }
            1 => {
                let dims = entry["shape"].as_array().map_or(0, Vec::len);
                let v = interesting_json(rng);
                if dims == 0 || !entry["shape"].is_array() {
                    entry["shape"] = json!([v.clone()]);
                } else {
                    entry["shape"][rng.below(dims)] = v.clone();
                }
                consistent = rng.chance(2, 3);
                format!("a dim of `{name}` := {v}")
            }
            2 => {
                let shape = match rng.below(5) {
                    0 => json!([]),
                    1 => json!([0, 1u64 << 62, 1u64 << 62]),
                    2 => json!("2,3"),
                    3 => {
                        let mut s = entry["shape"].clone();
                        if let Some(a) = s.as_array_mut() {
                            a.push(json!(1));
                        }
                        s
                    }
                    _ => {
                        let mut s = entry["shape"].clone();
                        if let Some(a) = s.as_array_mut() {
                            a.pop();
                        }
                        s
                    }
                };
                entry["shape"] = shape.clone();
                consistent = rng.chance(1, 2);
                format!("shape of `{name}` := {shape}")
            }
            3 => {
                let len = data.len() as u64;
                let old = entry["data_offsets"].clone();
                let mut end_points = vec![json!(0), json!(len), json!(len + 1), json!(u64::MAX)];
                end_points.extend(old.as_array().cloned().unwrap_or_default());
                end_points.push(interesting_json(rng));
                let offsets = match rng.below(4) {
                    0 => json!([rng.pick(&end_points)]),
                    1 => json!([old[1].clone(), old[0].clone()]),
                    _ => json!([rng.pick(&end_points), rng.pick(&end_points)]),
                };
                entry["data_offsets"] = offsets.clone();
                format!("data_offsets of `{name}` := {offsets}")
            }
            4 => {
                let value = map.remove(&name)?;
                let new = match rng.below(6) {
                    0 => String::new(),
                    1 => "proj.weight".into(),
                    2 => "__metadata__".into(),
                    3 => "a..b.".into(),
                    4 => "n".repeat(5000),
                    _ => rng.pick(&names),
                };
                let short = new[..new.len().min(20)].to_string();
                map.insert(new, value);
                format!("`{name}` renamed to {short:?}")
            }
            5 => {
                map.remove(&name);
                format!("`{name}` removed")
            }
            6 => {
                duplicate = Some((name.clone(), entry.clone()));
                format!("`{name}` given twice")
            }
            7 => {
                let meta = match rng.below(5) {
                    0 => json!({"format": "pt"}),
                    1 => json!({"k": 5}),
                    2 => json!([]),
                    3 => json!("x"),
                    _ => json!({"nested": {"a": "b"}}),
                };
                map.insert("__metadata__".into(), meta.clone());
                format!("__metadata__ := {meta}")
            }
            _ => {
                let n = n as u64;
                let v = rng.pick(&[0, 1, 7, 8, n.saturating_sub(1), n + 1, u64::MAX, 100 << 20]);
                prefix = Some(v);
                format!("header length prefix {n} := {v}")
            }
        }
    };
    if consistent {
        relayout(&mut map, &mut data);
    }
    let mut text = serde_json::to_string(&Value::Object(map)).ok()?;
    if let Some((k, v)) = duplicate {
        let sep = if text.len() > 2 { "," } else { "" };
        text.insert_str(1, &format!("{}:{v}{sep}", serde_json::to_string(&k).ok()?));
    }
    if rng.chance(1, 2) {
        while !text.len().is_multiple_of(8) {
            text.push(' ');
        }
    }
    let mut out = prefix.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&data);
    *b = out;
    Some(format!(
        "{desc}{}",
        if consistent { " (offsets relaid)" } else { "" }
    ))
}

/// Rewrite a torch zip: mutate its pickle (opcodes or bytes, with the CRC kept right),
/// regenerate its state dict, resize / rename / drop / add entries, compress one, or write
/// zip64 records.
fn mutate_zip(b: &mut Vec<u8>, rng: &mut Rng, donor: &[u8]) -> Option<String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(&b[..])).ok()?;
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..archive.len() {
        let mut e = archive.by_index(i).ok()?;
        if e.size() > 64 << 20 {
            return None;
        }
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).ok()?;
        entries.push((e.name().to_string(), bytes));
    }
    drop(archive);
    let pkl = entries.iter().position(|(n, _)| n.ends_with("data.pkl"));
    let prefix = pkl.map_or("archive/".to_string(), |i| {
        entries[i].0.trim_end_matches("data.pkl").to_string()
    });
    let mut options = Vec::new();
    let desc = match (rng.below(11), pkl) {
        (0..=3, Some(i)) => {
            let d = mutate_pickle(&mut entries[i].1, rng)
                .unwrap_or_else(|| mutate_bytes("data.pkl", &mut entries[i].1, rng, donor));
            format!("{}: {d}", entries[i].0)
        }
        (4, Some(i)) => {
            let d = mutate_bytes("data.pkl", &mut entries[i].1, rng, donor);
            format!("{}: {d}", entries[i].0)
        }
        (5 | 6, _) => {
            let (d, fresh) = generate_state_dict(&prefix, rng);
            entries = fresh;
            format!("state dict regenerated: {d}")
        }
        (7, _) => {
            let i = rng.below(entries.len().max(1));
            let (name, bytes) = entries.get_mut(i)?;
            let d = match rng.below(3) {
                0 => {
                    let k = 1 + rng.below(bytes.len().clamp(1, 64));
                    bytes.truncate(bytes.len().saturating_sub(k));
                    format!("{k} bytes shorter")
                }
                1 => {
                    let k = 1 + rng.below(64);
                    bytes.extend((0..k).map(|_| rng.next() as u8 & 0x3f));
                    format!("{k} bytes longer")
                }
                _ => {
                    bytes.clear();
                    "emptied".into()
                }
            };
            format!("entry `{name}` {d}")
        }
        (8, _) => {
            let i = rng.below(entries.len().max(1));
            match rng.below(4) {
                0 if !entries.is_empty() => {
                    let (name, _) = entries.remove(i);
                    format!("entry `{name}` removed")
                }
                1 if !entries.is_empty() => {
                    let new = rng.pick(&[
                        format!("{prefix}data/99"),
                        format!("{prefix}data/00"),
                        format!("{prefix}other.pkl"),
                        "data.pkl".to_string(),
                        format!("{prefix}data.pkl/"),
                        format!("x/{}", entries[i].0),
                    ]);
                    let old = std::mem::replace(&mut entries[i].0, new.clone());
                    if entries.iter().filter(|(n, _)| *n == new).count() > 1 {
                        return None;
                    }
                    format!("entry `{old}` renamed to `{new}`")
                }
                2 => {
                    let mut p = Pickle::new();
                    if rng.chance(1, 2) {
                        p.global("posix", "system").str("echo pwned").op(b"\x85R.");
                    } else {
                        p.op(b"}.");
                    }
                    entries.push((format!("{prefix}extra.pkl"), p.0));
                    "an extra pickle added".into()
                }
                _ => {
                    let order = rng.pick(&["big", "little\n", "", "littlelittlelittlelittle"]);
                    match entries.iter_mut().find(|(n, _)| n.ends_with("byteorder")) {
                        Some((_, bytes)) => *bytes = order.as_bytes().to_vec(),
                        None => entries.push((format!("{prefix}byteorder"), order.into())),
                    }
                    format!("byteorder := {order:?}")
                }
            }
        }
        (9, _) => {
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            options = vec![stored; entries.len()];
            if rng.chance(1, 2) && !entries.is_empty() {
                let i = rng.below(entries.len());
                options[i] = stored.compression_method(zip::CompressionMethod::Deflated);
                format!("entry `{}` deflated", entries[i].0)
            } else {
                options.iter_mut().for_each(|o| *o = o.large_file(true));
                "zip64 records".into()
            }
        }
        _ if entries.len() > 1 => {
            let i = rng.below(entries.len());
            let e = entries.remove(i);
            let to = rng.below(entries.len() + 1);
            let d = format!("entry `{}` moved to position {to}", e.0);
            entries.insert(to, e);
            d
        }
        _ => return None,
    };
    *b = zip_bytes(&entries, &options)?;
    Some(desc)
}

/// A shard index: shard names that escape or do not exist, renamed / removed / extra tensors,
/// a `weight_map` of the wrong type.
fn mutate_index(b: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
    let mut root: Value = serde_json::from_slice(b).ok()?;
    let map = root.get_mut("weight_map")?.as_object_mut()?;
    let keys: Vec<String> = map.keys().cloned().collect();
    let shards: Vec<Value> = map.values().cloned().collect();
    let desc = match rng.below(6) {
        0 if !keys.is_empty() => {
            let k = rng.pick(&keys);
            let shard = match rng.below(8) {
                0 => json!("../outside.safetensors"),
                1 => json!("/etc/passwd"),
                2 => json!(""),
                3 => json!("."),
                4 => json!("sub/x.safetensors"),
                5 => json!("missing.safetensors"),
                6 => json!("model.safetensors.index.json"),
                _ => rng.pick(&shards),
            };
            map.insert(k.clone(), shard.clone());
            format!("shard of `{k}` := {shard}")
        }
        1 if !keys.is_empty() => {
            let k = rng.pick(&keys);
            let v = map.remove(&k)?;
            let new = rng.pick(&["", "new.tensor", "proj.weight", "proj.bias"]);
            map.insert(new.into(), v);
            format!("`{k}` renamed to `{new}`")
        }
        2 if !keys.is_empty() => {
            let k = rng.pick(&keys);
            map.remove(&k);
            format!("`{k}` removed")
        }
        3 if !shards.is_empty() => {
            map.insert("extra.tensor".into(), rng.pick(&shards));
            "`extra.tensor` added".into()
        }
        4 => {
            let v = rng.pick(&[Value::Null, json!([]), json!("x"), json!({"a": 5})]);
            root["weight_map"] = v.clone();
            format!("weight_map := {v}")
        }
        _ => {
            let v = interesting_json(rng);
            root["metadata"] = json!({"total_size": v});
            format!("metadata.total_size := {v}")
        }
    };
    *b = serde_json::to_vec(&root).ok()?;
    Some(desc)
}

fn json_leaves(v: &Value, path: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            json_leaves(
                x,
                format!("{path}/{}", k.replace('~', "~0").replace('/', "~1")),
                out,
            )
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| json_leaves(x, format!("{path}/{i}"), out)),
        _ => out.push(path),
    }
}

/// A config: one value replaced with a huge, negative, fractional, string or null one, or
/// `model_type` set to the MLLM's (which changes how `inspect` classifies the checkpoint).
fn mutate_json(b: &mut Vec<u8>, rng: &mut Rng) -> Option<String> {
    let mut root: Value = serde_json::from_slice(b).ok()?;
    let desc = if rng.chance(1, 5) && root.is_object() {
        root["model_type"] = json!("illume_qwen2");
        "model_type := illume_qwen2".to_string()
    } else {
        let mut leaves = Vec::new();
        json_leaves(&root, String::new(), &mut leaves);
        if leaves.is_empty() {
            return None;
        }
        let path = rng.pick(&leaves);
        let v = interesting_json(rng);
        *root.pointer_mut(&path)? = v.clone();
        format!("{path} := {v}")
    };
    *b = serde_json::to_vec(&root).ok()?;
    Some(desc)
}

fn mutate_file(name: &str, b: &mut Vec<u8>, rng: &mut Rng, donor: &[u8]) -> String {
    if rng.chance(2, 3) {
        let structured = if name.ends_with(".safetensors") {
            mutate_safetensors(b, rng)
        } else if name.ends_with(".index.json") {
            mutate_index(b, rng)
        } else if name.ends_with(".json") {
            mutate_json(b, rng)
        } else if b.starts_with(b"PK\x03\x04") {
            mutate_zip(b, rng, donor)
        } else {
            mutate_pickle(b, rng)
        };
        if let Some(desc) = structured {
            return desc;
        }
    }
    mutate_bytes(name, b, rng, donor)
}

/// Case `iteration`: the first iterations are the seeds unchanged; then a seed (by weight)
/// with one to four stacked mutations.
fn make_case(corpus: &[Seed], iteration: u64, rng: &mut Rng) -> (Seed, String) {
    if let Some(seed) = corpus.get(iteration as usize) {
        return (seed.clone(), format!("{} (unmutated)", seed.name));
    }
    let total: usize = corpus.iter().map(|s| s.weight).sum();
    let mut ticket = rng.below(total);
    let seed = corpus
        .iter()
        .find(|s| {
            if ticket < s.weight {
                true
            } else {
                ticket -= s.weight;
                false
            }
        })
        .expect("a seed");
    let mut case = seed.clone();
    let most = 1 + rng.below(4);
    let rounds = 1 + rng.below(most);
    let mut log = Vec::new();
    for _ in 0..rounds {
        let weights: Vec<usize> = case
            .files
            .iter()
            .map(|(n, _)| {
                if n.ends_with(".json") && !n.ends_with(".index.json") {
                    1
                } else {
                    4
                }
            })
            .collect();
        let mut ticket = rng.below(weights.iter().sum());
        let f = weights
            .iter()
            .position(|w| {
                if ticket < *w {
                    true
                } else {
                    ticket -= w;
                    false
                }
            })
            .unwrap_or(0);
        let donor_seed = &corpus[rng.below(corpus.len())];
        let donor = &donor_seed.files[rng.below(donor_seed.files.len())].1;
        let (name, bytes) = &mut case.files[f];
        let desc = mutate_file(name, bytes, rng, donor);
        log.push(format!("{name}: {desc}"));
    }
    let desc = format!("{} | {}", seed.name, log.join(" | "));
    (case, desc.replace('\n', "\\n"))
}

// ---- the target ----

#[derive(Module, Debug)]
struct Tiny<B: burn::tensor::backend::Backend> {
    proj: Linear<B>,
}

fn tiny() -> Tiny<NdArray> {
    Tiny {
        proj: LinearConfig::new(3, 2).init(&Default::default()),
    }
}

#[derive(Default)]
struct Outcome {
    opened: bool,
    inspected: bool,
    tensors_ok: u64,
    tensors_err: u64,
    loaded: Option<bool>,
}

/// Everything a hostile file can reach through the crate's public API.
fn exercise(path: &Path, float_dtype: Option<DType>) -> Outcome {
    let mut out = Outcome::default();
    match illume_weights::inspect(path) {
        Ok(inspection) => {
            out.inspected = true;
            let _ = inspection.to_string();
        }
        Err(e) => drop(e.to_string()),
    }
    let ckpt = match Checkpoint::open(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return out;
        }
    };
    out.opened = true;
    let device = Default::default();
    let names: Vec<String> = ckpt.names().map(str::to_owned).collect();
    for name in &names {
        let _ = (ckpt.dtype(name), ckpt.format(), ckpt.files());
        match ckpt.data(name) {
            Ok(data) => {
                out.tensors_ok += 1;
                drop(data);
                let _ = match ckpt.shape(name).map(|s| s.len()) {
                    Some(1) => ckpt.float::<NdArray, 1>(name, &device).map(drop),
                    Some(2) => ckpt.float::<NdArray, 2>(name, &device).map(drop),
                    Some(3) => ckpt.float::<NdArray, 3>(name, &device).map(drop),
                    Some(4) => ckpt.float::<NdArray, 4>(name, &device).map(drop),
                    _ => Ok(()),
                };
            }
            Err(e) => {
                out.tensors_err += 1;
                let _ = e.to_string();
            }
        }
    }
    let _ = ckpt.roots();
    let ckpt = match ckpt.unwrap_state_dict("proj", "Tiny") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return out;
        }
    };
    let mut options = LoadOptions::named("Tiny");
    if let Some(dtype) = float_dtype {
        options = options.with_float_dtype(dtype);
    }
    out.loaded = Some(match ckpt.load_into(tiny(), &options) {
        Ok(_) => true,
        Err(e) => {
            let _ = e.to_string();
            false
        }
    });
    out
}

// ---- the worker (child process) ----

struct Config {
    seed: u64,
    from: u64,
    iterations: u64,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Self {
        Config {
            seed: env_u64("ILLUME_FUZZ_SEED", DEFAULT_SEED),
            from: env_u64("ILLUME_FUZZ_FROM", 0),
            iterations: env_u64("ILLUME_FUZZ_ITERATIONS", DEFAULT_ITERATIONS),
        }
    }
}

#[derive(Default)]
struct Stats {
    cases: u64,
    opened: u64,
    open_errors: u64,
    inspected: u64,
    tensors_ok: u64,
    tensors_err: u64,
    loads_ok: u64,
    load_errors: u64,
    max_growth: u64,
    max_growth_iteration: u64,
    max_growth_input: u64,
    /// The same, over the cases that stayed within the bound.
    max_ok_growth: u64,
    max_ok_growth_iteration: u64,
    max_ok_growth_input: u64,
}

impl Stats {
    fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.cases,
            self.opened,
            self.open_errors,
            self.inspected,
            self.tensors_ok,
            self.tensors_err,
            self.loads_ok,
            self.load_errors,
            self.max_growth,
            self.max_growth_iteration,
            self.max_growth_input,
            self.max_ok_growth,
            self.max_ok_growth_iteration,
            self.max_ok_growth_input
        )
    }

    fn add_line(&mut self, line: &str) {
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() != 14 {
            return;
        }
        self.cases += v[0];
        self.opened += v[1];
        self.open_errors += v[2];
        self.inspected += v[3];
        self.tensors_ok += v[4];
        self.tensors_err += v[5];
        self.loads_ok += v[6];
        self.load_errors += v[7];
        if v[8] > self.max_growth {
            (
                self.max_growth,
                self.max_growth_iteration,
                self.max_growth_input,
            ) = (v[8], v[9], v[10]);
        }
        if v[11] > self.max_ok_growth {
            (
                self.max_ok_growth,
                self.max_ok_growth_iteration,
                self.max_ok_growth_input,
            ) = (v[11], v[12], v[13]);
        }
    }
}

/// The last panic seen by the hook: (signature, message with backtrace).
static LAST_PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

/// The reader a case reaches, for telling findings apart.
fn format_of(case: &Seed) -> &'static str {
    let opened = case.files.iter().find(|(n, _)| *n == case.open);
    match opened {
        None => "a directory",
        Some((n, _)) if n.ends_with(".index.json") => "a shard index",
        Some((n, _)) if n.ends_with(".safetensors") => "a safetensors file",
        Some((_, b)) if b.starts_with(b"PK") => "a torch zip",
        Some(_) => "a legacy torch file",
    }
}

fn write_case(dir: &Path, case: &Seed) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("scratch directory");
    for (name, bytes) in &case.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("scratch directory");
        }
        std::fs::write(&path, bytes).expect("scratch file");
    }
}

fn worker(config: &Config, scratch: &Path) {
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
        let frames: Vec<&str> = backtrace.lines().take(80).collect();
        // Where it panicked, and the innermost frame of this crate's own code on the way.
        let location = info
            .location()
            .map_or("?".into(), |l| format!("{}:{}", l.file(), l.line()));
        let ours = backtrace
            .lines()
            .find_map(|l| l.trim().strip_prefix("at ./src/"))
            .unwrap_or("?");
        let signature = format!("panic at {location} via src/{ours}");
        if !CASE_ACTIVE.load(Relaxed) {
            // Not in a case: the harness itself failed; say so where the parent looks.
            eprintln!("fuzz worker: {info}\n{backtrace}");
        }
        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = Some((
                signature,
                format!("{info}\nbacktrace:\n{}", frames.join("\n")),
            ));
        }
    }));
    let corpus = corpus();
    let case_dir = scratch.join("case");
    let mut stats = Stats::default();
    let mut stdout = std::io::stdout();
    // Each case's peak growth on the worker's stdout (run the worker alone to see it).
    let verbose = std::env::var_os("ILLUME_FUZZ_VERBOSE").is_some();
    let report = |stdout: &mut std::io::Stdout, iteration: u64, signature: String, text: String| {
        let finding = json!({"iteration": iteration, "signature": signature, "text": text});
        let _ = writeln!(stdout, "FUZZ-FINDING {finding}");
    };
    for iteration in config.from..config.from + config.iterations {
        let mut rng = Rng::for_case(config.seed, iteration);
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            make_case(&corpus, iteration, &mut rng)
        }));
        let Ok((case, desc)) = made else {
            let (signature, message) = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .unwrap_or_default();
            report(
                &mut stdout,
                iteration,
                format!("harness bug: {signature}"),
                format!(
                    "iteration {iteration}: the harness panicked while making the case: {message}"
                ),
            );
            continue;
        };
        let float_dtype = match rng.below(10) {
            0 => Some(DType::F16),
            1 => Some(DType::BF16),
            2 => Some(DType::F32),
            _ => None,
        };
        let _ = writeln!(stdout, "FUZZ-CASE {iteration} {desc}");
        let _ = stdout.flush();
        write_case(&case_dir, &case);
        let target = case_dir.join(&case.open);
        let input = case.bytes();
        let keep = |what: &str| {
            let dir = scratch.join(format!("finding-{iteration}"));
            write_case(&dir, &case);
            format!(
                "iteration {iteration} (seed {:#x}): {what}\n  case: {desc}\n  float dtype: \
                 {float_dtype:?}\n  input kept at {}",
                config.seed,
                dir.join(&case.open).display()
            )
        };

        if let Ok(mut slot) = LAST_PANIC.lock() {
            *slot = None;
        }
        begin_case();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            exercise(&target, float_dtype)
        }));
        let (growth, refused) = end_case();

        match result {
            Ok(outcome) => {
                stats.cases += 1;
                if outcome.opened {
                    stats.opened += 1;
                } else {
                    stats.open_errors += 1;
                }
                stats.inspected += outcome.inspected as u64;
                stats.tensors_ok += outcome.tensors_ok;
                stats.tensors_err += outcome.tensors_err;
                match outcome.loaded {
                    Some(true) => stats.loads_ok += 1,
                    Some(false) => stats.load_errors += 1,
                    None => {}
                }
                // The unmutated seeds must themselves be readable, or they fuzz nothing.
                if (iteration as usize) < corpus.len() && !(outcome.opened || outcome.inspected) {
                    report(
                        &mut stdout,
                        iteration,
                        format!("seed `{}` is unreadable", case.name),
                        keep("an unmutated seed neither opens nor inspects"),
                    );
                }
                if verbose {
                    let _ = writeln!(stdout, "FUZZ-GROWTH {iteration} {growth} {input}");
                }
                // The bound: peak live heap during the case, over what was live before it.
                let bound = allocation_bound(input);
                if refused > 0 || growth > bound {
                    report(
                        &mut stdout,
                        iteration,
                        format!("allocation over the bound ({})", format_of(&case)),
                        keep(&format!(
                            "allocated {growth} bytes at its peak (refused a request of \
                             {refused} bytes) for {input} bytes of input; the bound is {bound} \
                             (4 MiB + 10 x input)"
                        )),
                    );
                }
                if growth as u64 > stats.max_growth {
                    stats.max_growth = growth as u64;
                    stats.max_growth_iteration = iteration;
                    stats.max_growth_input = input as u64;
                }
                if growth <= bound && growth as u64 > stats.max_ok_growth {
                    stats.max_ok_growth = growth as u64;
                    stats.max_ok_growth_iteration = iteration;
                    stats.max_ok_growth_input = input as u64;
                }
            }
            Err(payload) => {
                stats.cases += 1;
                let (signature, message) = LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut s| s.take())
                    .unwrap_or_else(|| {
                        let text = payload
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        (format!("panic: {text}"), text)
                    });
                report(
                    &mut stdout,
                    iteration,
                    signature,
                    keep(&format!("panicked: {message}")),
                );
            }
        }
        // Counters go out in batches (a crash loses at most one batch of them).
        if stats.cases == 64 {
            let _ = writeln!(stdout, "FUZZ-STATS {}", stats.line());
            stats = Stats::default();
        }
    }
    let _ = writeln!(stdout, "FUZZ-STATS {}", stats.line());
    let _ = writeln!(stdout, "FUZZ-DONE");
    let _ = stdout.flush();
}

// ---- the supervisor (the test) ----

enum Line {
    Case(u64, String),
    /// (iteration, signature, text)
    Finding(u64, String, String),
    Stats(String),
    Done,
}

fn parse_line(line: &str) -> Option<Line> {
    let at = line.find("FUZZ-")?;
    let line = &line[at..];
    if let Some(rest) = line.strip_prefix("FUZZ-CASE ") {
        let (i, desc) = rest.split_once(' ').unwrap_or((rest, ""));
        return Some(Line::Case(i.parse().ok()?, desc.to_string()));
    }
    if let Some(rest) = line.strip_prefix("FUZZ-FINDING ") {
        let v: Value = serde_json::from_str(rest).unwrap_or_else(|_| json!({"text": rest}));
        return Some(Line::Finding(
            v["iteration"].as_u64().unwrap_or(0),
            v["signature"].as_str().unwrap_or("?").to_string(),
            v["text"].as_str().unwrap_or(rest).to_string(),
        ));
    }
    if let Some(rest) = line.strip_prefix("FUZZ-STATS ") {
        return Some(Line::Stats(rest.to_string()));
    }
    line.starts_with("FUZZ-DONE").then_some(Line::Done)
}

/// What the worker said on stderr, without the frames of std and the test harness.
fn worker_stderr(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("at /rustc")
                || t.contains(": std::")
                || t.contains(": core::")
                || t.contains(": test::")
                || t.contains(": <")
                || t.starts_with("running ")
                || t.is_empty())
        })
        .take(60)
        .collect();
    lines.join("\n")
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Findings grouped by signature (where it panicked, or what was violated), first seen first.
#[derive(Default)]
struct Findings(Vec<(String, String, Vec<u64>)>);

impl Findings {
    fn add(&mut self, iteration: u64, signature: String, text: String) {
        match self.0.iter_mut().find(|(s, _, _)| *s == signature) {
            Some((_, _, iterations)) => {
                if iterations.len() < 3 {
                    println!("fuzz: again at iteration {iteration}: {signature}");
                }
                iterations.push(iteration);
            }
            None => {
                println!("fuzz: FINDING {signature}\n{text}");
                self.0.push((signature, text, vec![iteration]));
            }
        }
    }

    fn summary(&self) -> String {
        self.0
            .iter()
            .map(|(signature, text, iterations)| {
                let shown: Vec<String> = iterations.iter().take(12).map(u64::to_string).collect();
                format!(
                    "== {signature}\n   {} case(s), iterations {}{}\n{text}",
                    iterations.len(),
                    shown.join(", "),
                    if iterations.len() > 12 { ", ..." } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

#[test]
fn fuzz_checkpoint_readers() {
    let config = Config::from_env();
    if let Some(scratch) = std::env::var_os(WORKER_ENV) {
        worker(&config, Path::new(&scratch));
        return;
    }
    let scratch = std::env::temp_dir().join(format!("illume-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let exe = std::env::current_exe().expect("the test binary");
    let started = Instant::now();
    let end = config.from + config.iterations;
    let mut next = config.from;
    let mut stats = Stats::default();
    let mut findings = Findings::default();
    let mut ran = 0u64;
    let mut restarts = 0;
    while next < end && findings.0.len() < MAX_FINDINGS {
        let stderr_path = scratch.join("worker-stderr.txt");
        let mut child = std::process::Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, &scratch)
            .env("ILLUME_FUZZ_SEED", config.seed.to_string())
            .env("ILLUME_FUZZ_FROM", next.to_string())
            .env("ILLUME_FUZZ_ITERATIONS", (end - next).to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("start the fuzz worker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<(u64, String)> = None;
        let mut done = false;
        let mut hung = false;
        loop {
            match rx.recv_timeout(CASE_TIMEOUT) {
                Ok(line) => match parse_line(&line) {
                    Some(Line::Case(i, desc)) => {
                        ran += 1;
                        current = Some((i, desc));
                    }
                    Some(Line::Finding(i, signature, text)) => findings.add(i, signature, text),
                    Some(Line::Stats(line)) => stats.add_line(&line),
                    Some(Line::Done) => done = true,
                    None => {}
                },
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    hung = true;
                    let _ = child.kill();
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("the fuzz worker's status");
        let _ = reader.join();
        if done && !hung {
            assert!(
                status.success(),
                "the fuzz worker failed after its cases: {status}\n{}",
                tail(&stderr_path, 40)
            );
            break;
        }
        let Some((i, desc)) = current else {
            panic!(
                "the fuzz worker died before its first case: {status}\n{}",
                tail(&stderr_path, 40)
            );
        };
        let kept = scratch.join(format!("finding-{i}"));
        let _ = std::fs::remove_dir_all(&kept);
        let _ = std::fs::rename(scratch.join("case"), &kept);
        let stderr = worker_stderr(&stderr_path);
        let (what, signature) = if hung {
            let what = format!("ran over {CASE_TIMEOUT:?} (killed)");
            (what.clone(), what)
        } else {
            // The worker's first words (refused allocation, overflowed stack, double free,
            // panic), digits masked, tell one cause from another.
            let last = stderr
                .lines()
                .find(|l| !l.starts_with(' ') && !l.trim().is_empty())
                .unwrap_or("");
            let mut masked = String::new();
            for c in last.chars() {
                if !c.is_ascii_digit() {
                    masked.push(c);
                } else if !masked.ends_with('#') {
                    masked.push('#');
                }
            }
            let ours = stderr
                .lines()
                .find_map(|l| l.trim().strip_prefix("at ./src/"))
                .unwrap_or("?");
            (
                format!("killed the worker process ({status})"),
                format!("worker killed: {masked} via src/{ours}"),
            )
        };
        let text = format!(
            "iteration {i} (seed {:#x}): {what}\n  case: {desc}\n  input kept in {}\n  worker \
             stderr:\n{stderr}",
            config.seed,
            kept.display(),
        );
        findings.add(i, signature, text);
        next = i + 1;
        restarts += 1;
    }
    println!(
        "fuzz: {ran} iterations ({}.., seed {:#x}) in {:.1} s, {restarts} worker restart(s)",
        config.from,
        config.seed,
        started.elapsed().as_secs_f64()
    );
    println!(
        "fuzz: opened {} / open errors {}; inspect ok {}; tensors read {} / errors {}; \
         load_into ok {} / errors {}",
        stats.opened,
        stats.open_errors,
        stats.inspected,
        stats.tensors_ok,
        stats.tensors_err,
        stats.loads_ok,
        stats.load_errors
    );
    println!(
        "fuzz: peak allocation growth {} bytes (iteration {}, {} input bytes; bound there {})",
        stats.max_growth,
        stats.max_growth_iteration,
        stats.max_growth_input,
        allocation_bound(stats.max_growth_input as usize)
    );
    println!(
        "fuzz: peak within the bound {} bytes (iteration {}, {} input bytes; bound there {})",
        stats.max_ok_growth,
        stats.max_ok_growth_iteration,
        stats.max_ok_growth_input,
        allocation_bound(stats.max_ok_growth_input as usize)
    );
    if findings.0.is_empty() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(
        findings.0.is_empty(),
        "{} distinct finding(s); replay a case with ILLUME_FUZZ_SEED={:#x} \
         ILLUME_FUZZ_FROM=<iteration> ILLUME_FUZZ_ITERATIONS=1:\n\n{}",
        findings.0.len(),
        config.seed,
        findings.summary()
    );
}
