//! Hostile checkpoints: each crafted file (written here, or made once by torch, see
//! tests/data/make_torch_files.py) must load correctly or fail with an error naming the file
//! and the tensor, never panic, never fabricate values, never allocate beyond the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::DType;
use burn_ndarray::NdArray;
use illume_weights::{Checkpoint, LoadOptions};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("illume-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn open_err(path: &Path) -> String {
    match Checkpoint::open(path) {
        Ok(c) => panic!(
            "{} opened ({} tensors), expected an error",
            path.display(),
            c.len()
        ),
        Err(e) => e.to_string(),
    }
}

fn assert_names(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "message should name `{n}`: {text}");
    }
}

#[derive(Module, Debug)]
struct Tiny<B: burn::tensor::backend::Backend> {
    proj: Linear<B>,
}

fn tiny() -> Tiny<NdArray> {
    Tiny {
        proj: LinearConfig::new(3, 2).init(&Default::default()),
    }
}

/// proj.weight [2,3] with `dtype` and `weight` bytes, proj.bias [2] f32.
fn tiny_safetensors(path: &Path, dtype: safetensors::Dtype, weight: &[u8]) {
    let bias: Vec<u8> = [0.5f32, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "proj.weight",
            safetensors::tensor::TensorView::new(dtype, vec![2, 3], weight).unwrap(),
        ),
        (
            "proj.bias",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bias).unwrap(),
        ),
    ];
    std::fs::write(path, safetensors::serialize(tensors, None).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn load_err(path: &Path, options: &LoadOptions) -> String {
    let ckpt = Checkpoint::open(path).unwrap();
    match ckpt.load_into(tiny(), options) {
        Ok(_) => panic!("{} loaded, expected an error", path.display()),
        Err(e) => e.to_string(),
    }
}

// ---- item 1: nothing non-float reaches burn-store's apply for a float parameter ----

#[test]
fn integer_and_bool_data_for_a_float_parameter_is_refused_by_name() {
    use safetensors::Dtype as D;
    for (dtype, size) in [
        (D::I8, 1),
        (D::U8, 1),
        (D::BOOL, 1),
        (D::I16, 2),
        (D::I32, 4),
        (D::U32, 4),
        (D::I64, 8),
    ] {
        let path = scratch(&format!("int-{dtype:?}.safetensors"));
        // Bytes 0/1 so BOOL is a valid bool tensor too.
        let weight: Vec<u8> = (0..6 * size).map(|i| (i % 2) as u8).collect();
        tiny_safetensors(&path, dtype, &weight);
        let err = load_err(&path, &LoadOptions::named("Tiny"));
        assert_names(&err, &["proj.weight", "refusing to reinterpret", "int-"]);
    }
}

#[test]
fn integer_storage_in_a_torch_file_is_refused_by_name() {
    let path = scratch("int-storage.bin");
    let mut p = Pickle::new();
    p.op(b"}(").str("proj.weight");
    p.tensor(Storage::new("0", "IntStorage", 6), 0, &[2, 3], &[3, 1]);
    p.str("proj.bias");
    p.tensor(Storage::new("1", "FloatStorage", 2), 0, &[2], &[1]);
    p.op(b"u.");
    let ints: Vec<u8> = (0..6i32).flat_map(|v| v.to_le_bytes()).collect();
    write_zip(
        &path,
        &[
            ("archive/data.pkl", p.0.clone()),
            ("archive/data/0", ints),
            ("archive/data/1", f32_bytes(&[1.0, 2.0])),
        ],
    );
    let err = load_err(&path, &LoadOptions::named("Tiny"));
    assert_names(&err, &["proj.weight", "I32", "int-storage.bin"]);
}

#[test]
fn non_finite_weights_are_refused_while_casting() {
    for (value, name) in [(f32::NAN, "nan"), (f32::INFINITY, "inf")] {
        let path = scratch(&format!("{name}.safetensors"));
        let weight = f32_bytes(&[0.0, 1.0, value, 3.0, 4.0, 5.0]);
        tiny_safetensors(&path, safetensors::Dtype::F32, &weight);
        let err = load_err(&path, &LoadOptions::named("Tiny"));
        assert_names(&err, &["proj.weight", "NaN or infinite"]);
    }
}

#[test]
fn a_float_type_the_backend_lacks_is_an_error_before_apply() {
    // ndarray has no f16 tensors: building one inside burn-store's apply panicked there,
    // and its unwind dropped the module twice (glibc: "malloc_consolidate(): unaligned
    // fastbin chunk detected", SIGABRT) before this check existed.
    let path = scratch("f16-on-ndarray.safetensors");
    tiny_safetensors(&path, safetensors::Dtype::F32, &f32_bytes(&[1.0; 6]));
    let err = load_err(
        &path,
        &LoadOptions::named("Tiny").with_float_dtype(DType::F16),
    );
    assert_names(&err, &["Tiny", "no F16 tensors", "f16-on-ndarray"]);
}

// ---- item 2: the bytes scanned are the bytes parsed ----

fn os_system_pickle() -> Vec<u8> {
    let mut p = Pickle::new();
    p.global("posix", "system").str("echo pwned").op(b"\x85R.");
    p.0
}

fn zip_bytes(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let path = scratch("tmp-zip-bytes.zip");
    write_zip(&path, entries);
    std::fs::read(&path).unwrap()
}

#[test]
fn harmless_pickles_followed_by_a_hostile_zip_are_refused() {
    let zip = zip_bytes(&[("archive/data.pkl", os_system_pickle())]);
    // Legacy magic, then a zip: found by its end record by other readers.
    let magic: [u8; 15] = [
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
    ];
    for (name, prefix) in [
        ("legacy-then-zip.bin", magic.to_vec()),
        (
            "pickle-then-zip.bin",
            b"\x80\x02K\x01.\x80\x02K\x02.".to_vec(),
        ),
    ] {
        let path = scratch(name);
        let mut bytes = prefix;
        bytes.extend_from_slice(&zip);
        std::fs::write(&path, bytes).unwrap();
        let err = open_err(&path);
        assert_names(&err, &[name]);
    }
    // Data prepended to a zip that itself starts with a local header.
    let path = scratch("zip-with-prefix.bin");
    let mut bytes = zip_bytes(&[("archive/data.pkl", b"\x80\x02}.".to_vec())]);
    bytes.extend_from_slice(&zip);
    std::fs::write(&path, bytes).unwrap();
    open_err(&path);
}

#[test]
fn every_pickle_in_the_archive_is_scanned() {
    let path = scratch("extra-pickle.bin");
    write_zip(
        &path,
        &[
            ("archive/data.pkl", b"\x80\x02}.".to_vec()),
            ("archive/other.pkl", os_system_pickle()),
        ],
    );
    let err = open_err(&path);
    assert_names(&err, &["posix.system", "other.pkl", "unsafe pickle"]);

    let path = scratch("two-states.bin");
    write_zip(
        &path,
        &[
            ("a/data.pkl", b"\x80\x02}.".to_vec()),
            ("b/data.pkl", b"\x80\x02}.".to_vec()),
        ],
    );
    assert_names(&open_err(&path), &["two state pickles"]);
}

#[test]
fn compressed_entries_are_not_inflated() {
    let path = scratch("deflated.bin");
    let file = std::fs::File::create(&path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(b"\x80\x02}.").unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    zip.write_all(&vec![0u8; 1 << 20]).unwrap();
    zip.finish().unwrap();
    assert_names(&open_err(&path), &["compressed", "deflated.bin"]);
}

// ---- item 3: no fabricated weights from .bin files ----

/// A one-tensor zip checkpoint: `t` viewing storage "0" (`class`, `numel` elements declared)
/// holding `bytes`.
fn one_tensor(
    name: &str,
    class: &str,
    numel: u32,
    offset: i64,
    shape: &[i64],
    stride: &[i64],
    bytes: Vec<u8>,
) -> PathBuf {
    let path = scratch(name);
    let mut p = Pickle::new();
    p.op(b"}").str("t");
    p.tensor(Storage::new("0", class, numel), offset, shape, stride);
    p.op(b"s.");
    write_zip(
        &path,
        &[("archive/data.pkl", p.0), ("archive/data/0", bytes)],
    );
    path
}

fn data_err(path: &Path) -> String {
    match Checkpoint::open(path) {
        Err(e) => e.to_string(),
        Ok(c) => match c.data("t") {
            Ok(d) => panic!("{}: read {:?}, expected an error", path.display(), d.shape),
            Err(e) => e.to_string(),
        },
    }
}

#[test]
fn bad_views_and_storages_are_errors_naming_the_tensor() {
    let six = || f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "offset out of range",
            one_tensor("offset.bin", "FloatStorage", 6, 5, &[2], &[1], six()),
            "reaches element 6",
        ),
        (
            "negative offset",
            one_tensor("negoff.bin", "FloatStorage", 6, -2, &[2], &[1], six()),
            "negative storage offset",
        ),
        (
            "wrapping offset",
            one_tensor(
                "wrap.bin",
                "FloatStorage",
                6,
                i64::MAX,
                &[3],
                &[i64::MAX],
                six(),
            ),
            "overflows",
        ),
        (
            "tensor larger than storage",
            one_tensor("big.bin", "FloatStorage", 6, 0, &[3, 3], &[3, 1], six()),
            "reaches element 8",
        ),
        (
            "huge declared size",
            one_tensor("huge.bin", "FloatStorage", 6, 0, &[1 << 29], &[1], six()),
            "storage `0`",
        ),
        (
            "negative size",
            one_tensor("negsize.bin", "FloatStorage", 6, 0, &[-1], &[1], six()),
            "negative size",
        ),
        (
            "negative stride",
            one_tensor("negstride.bin", "FloatStorage", 6, 5, &[6], &[-1], six()),
            "negative stride",
        ),
        (
            "storage shorter than declared",
            one_tensor(
                "short.bin",
                "FloatStorage",
                6,
                0,
                &[6],
                &[1],
                six()[..12].to_vec(),
            ),
            "holds 12 bytes",
        ),
        (
            "HalfStorage tag on float32 bytes",
            one_tensor("half.bin", "HalfStorage", 6, 0, &[6], &[1], six()),
            "HalfStorage",
        ),
        (
            "rank mismatch",
            one_tensor("rank.bin", "FloatStorage", 6, 0, &[2, 3], &[1], six()),
            "different ranks",
        ),
        // Found by the fuzz harness: 536 bytes asked for 134 MB (or 26 TB, aborting).
        (
            "expanded (stride 0) view",
            one_tensor(
                "expanded.bin",
                "FloatStorage",
                6,
                0,
                &[1 << 24],
                &[0],
                six(),
            ),
            "expanded view",
        ),
        // Found by the fuzz harness: `last + 1` overflowed.
        (
            "stride reaching u64::MAX",
            one_tensor(
                "overflow.bin",
                "FloatStorage",
                6,
                0,
                &[3, 2],
                &[i64::MAX, 1],
                six(),
            ),
            "overflows",
        ),
    ];
    for (what, path, needle) in cases {
        let err = data_err(&path);
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(err.contains(file), "{what}: names the file: {err}");
        assert!(
            err.contains("`t`") || err.contains("storage `0`"),
            "{what}: names the tensor or its storage: {err}"
        );
    }
}

#[test]
fn missing_storage_is_an_error() {
    let path = scratch("nostorage.bin");
    let mut p = Pickle::new();
    p.op(b"}").str("t");
    p.tensor(Storage::new("7", "FloatStorage", 2), 0, &[2], &[1]);
    p.op(b"s.");
    write_zip(&path, &[("archive/data.pkl", p.0)]);
    assert_names(
        &open_err(&path),
        &["storage `7`", "missing", "nostorage.bin"],
    );
}

#[test]
fn bool_storage_with_bytes_other_than_0_and_1_is_refused() {
    let path = one_tensor("bool.bin", "BoolStorage", 3, 0, &[3], &[1], vec![0, 1, 7]);
    assert_names(&data_err(&path), &["`t`", "bool"]);
}

#[test]
fn torch_written_views_load_with_their_strides() {
    // Expected values are those torch printed for the same expressions (make_torch_files.py):
    // arange(6).reshape(2,3).t() == [[0,3],[1,4],[2,5]]; arange(10)[4:7] == [4,5,6].
    let ckpt = Checkpoint::open(data_file("transposed.bin")).unwrap();
    let w = ckpt.data("w").unwrap();
    assert_eq!(w.shape.to_vec(), vec![3, 2]);
    assert_eq!(
        w.to_vec::<f32>().unwrap(),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    let ckpt = Checkpoint::open(data_file("slice.bin")).unwrap();
    assert_eq!(
        ckpt.data("v").unwrap().to_vec::<f32>().unwrap(),
        vec![4.0, 5.0, 6.0]
    );
}

#[test]
fn legacy_format_loads_and_truncation_is_an_error() {
    let path = data_file("legacy.bin");
    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(
        ckpt.data("a").unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 1.0, 2.0, 3.0]
    );
    assert_eq!(ckpt.data("b").unwrap().to_vec::<i64>().unwrap(), vec![1, 2]);

    let bytes = std::fs::read(&path).unwrap();
    for (name, len) in [
        ("legacy-third.bin", bytes.len() / 3),
        ("legacy-last-byte.bin", bytes.len() - 1),
    ] {
        let cut = scratch(name);
        std::fs::write(&cut, &bytes[..len]).unwrap();
        assert_names(&open_err(&cut), &["truncated", name]);
    }
    let long = scratch("legacy-trailing.bin");
    let mut extra = bytes.clone();
    extra.extend_from_slice(b"junk");
    std::fs::write(&long, extra).unwrap();
    assert_names(&open_err(&long), &["4 unexplained bytes"]);
}

#[test]
fn pickle_bombs_and_deep_nesting_are_refused_quickly() {
    // A list doubled through the memo 40 times would need 2^40 nodes.
    let mut p = Pickle::new();
    p.op(b"]q\x00");
    for _ in 0..40 {
        p.op(b"0(h\x00h\x00lq\x00");
    }
    p.op(b".");
    let path = scratch("bomb.bin");
    write_zip(&path, &[("archive/data.pkl", p.0)]);
    assert_names(&open_err(&path), &["pickle bomb", "bomb.bin"]);

    let mut p = Pickle::new();
    for _ in 0..100_000 {
        p.op(b"(");
    }
    p.op(b")");
    for _ in 0..100_000 {
        p.op(b"\x85");
    }
    p.op(b".");
    let path = scratch("deep.bin");
    write_zip(&path, &[("archive/data.pkl", p.0)]);
    assert_names(&open_err(&path), &["nested more than"]);
}

// ---- item 8: sharded indexes and safetensors headers ----

fn shard(path: &Path, name: &str) {
    let v = f32_bytes(&[1.0, 2.0]);
    let t = vec![(
        name,
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &v).unwrap(),
    )];
    std::fs::write(path, safetensors::serialize(t, None).unwrap()).unwrap();
}

fn index(dir: &Path, map: &[(&str, &str)]) -> PathBuf {
    let entries: Vec<String> = map.iter().map(|(t, f)| format!("{t:?}: {f:?}")).collect();
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(
        &path,
        format!("{{\"weight_map\": {{{}}}}}", entries.join(",")),
    )
    .unwrap();
    path
}

#[test]
fn shard_paths_must_stay_inside_the_checkpoint_directory() {
    let root = scratch("shards-escape");
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&root.join("outside.safetensors"), "a");
    for target in ["../outside.safetensors", "/etc/passwd"] {
        let path = index(&dir, &[("a", target)]);
        assert_names(&open_err(&path), &[target, "inside"]);
    }
}

#[test]
fn a_tensor_must_come_from_the_shard_the_index_names() {
    let dir = scratch("shards-dup");
    std::fs::create_dir_all(&dir).unwrap();
    shard(&dir.join("one.safetensors"), "a");
    shard(&dir.join("two.safetensors"), "a");
    let path = index(&dir, &[("a", "one.safetensors"), ("b", "two.safetensors")]);
    assert_names(&open_err(&path), &["`a`", "two.safetensors"]);
}

fn raw_safetensors(name: &str, header: &str, data_len: usize) -> PathBuf {
    let path = scratch(name);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn safetensors_header_problems_name_the_tensor() {
    let dup = raw_safetensors(
        "dup.safetensors",
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        8,
    );
    assert_names(&open_err(&dup), &["`w`", "twice"]);

    let unknown = raw_safetensors(
        "dtype.safetensors",
        r#"{"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}"#,
        4,
    );
    assert_names(&open_err(&unknown), &["`w`", "F12"]);

    let overlap = raw_safetensors(
        "overlap.safetensors",
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
        12,
    );
    assert_names(&open_err(&overlap), &["`b`"]);
}

// ---- writers for crafted torch files ----

struct Storage<'a> {
    key: &'a str,
    class: &'a str,
    numel: u32,
}

impl<'a> Storage<'a> {
    fn new(key: &'a str, class: &'a str, numel: u32) -> Self {
        Self { key, class, numel }
    }
}

/// Protocol-2 pickle bytes, written opcode by opcode.
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
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, s: Storage, offset: i64, shape: &[i64], stride: &[i64]) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(").str("storage").global("torch", s.class);
        self.str(s.key).str("cpu").int(s.numel as i64).op(b"tQ");
        self.int(offset).ints(shape).ints(stride).op(b"\x89");
        self.global("collections", "OrderedDict").op(b")R");
        self.op(b"tR")
    }
}

fn write_zip(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

// ---- item 4: a config declaring more than the checkpoint holds ----

#[test]
fn a_config_declaring_more_parameters_than_the_checkpoint_holds_is_refused() {
    let path = scratch("declared.safetensors");
    tiny_safetensors(&path, safetensors::Dtype::F32, &f32_bytes(&[0.0; 6]));
    let checkpoint = Checkpoint::open(&path).unwrap();
    assert_eq!(checkpoint.value_count(), 8, "6 weights + 2 biases");
    let size = |parameters| illume_weights::DeclaredSize {
        model: "Tiny".into(),
        config: "tiny/config.json".into(),
        parameters,
        fields: "layers=100000".into(),
    };
    size(8).check(&checkpoint, Some(4)).unwrap();
    size(8).check(&checkpoint, None).unwrap();
    let err = size(9).check(&checkpoint, None).unwrap_err().to_string();
    assert_names(
        &err,
        &["tiny/config.json", "layers=100000", "declared.safetensors"],
    );
    assert!(err.contains("does not describe this checkpoint"), "{err}");
}
