//! Checkpoint reading: the official formats load identically, and bad files fail clearly.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use illume::backends::NdArray;
use illume::weights::{Checkpoint, LoadOptions, WeightsError};
use illume_test_harness::fixture_sets;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("illume-ckpt-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn open_err(path: &Path) -> String {
    Checkpoint::open(path).unwrap_err().to_string()
}

#[test]
fn dualvitok_bin_and_safetensors_hold_identical_tensors() {
    for set in fixture_sets("dualvitok") {
        let st = Checkpoint::open(set.dir.join("model.safetensors")).unwrap();
        let bin = Checkpoint::open(set.dir.join("pytorch_model.bin")).unwrap();
        println!("  {} tensors in each file", st.len());
        assert!(st.len() > 100, "a DualViTok has hundreds of tensors");
        let st_names: Vec<&str> = st.names().collect();
        let bin_names: Vec<&str> = bin.names().collect();
        assert_eq!(st_names, bin_names, "same tensor names");
        for name in st_names {
            let (a, b) = (st.data(name).unwrap(), bin.data(name).unwrap());
            assert_eq!(a.shape, b.shape, "{name}: shape");
            assert_eq!(a.dtype, b.dtype, "{name}: dtype");
            assert_eq!(a.as_bytes(), b.as_bytes(), "{name}: bytes differ");
        }
    }
}

#[test]
fn directory_opens_the_checkpoint_inside() {
    for set in fixture_sets("mllm") {
        let ckpt = Checkpoint::open(&set.dir).unwrap();
        assert!(ckpt.contains("model.embed_tokens.weight"));
    }
}

#[test]
fn truncated_safetensors_is_reported_as_truncated() {
    let set = &fixture_sets("dualvitok")[0];
    let bytes = std::fs::read(set.dir.join("model.safetensors")).unwrap();
    let path = scratch("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = open_err(&path);
    assert!(err.contains("truncated"), "{err}");
    assert!(
        err.contains("truncated.safetensors"),
        "names the file: {err}"
    );
}

#[test]
fn wrong_header_is_not_a_safetensors_file() {
    let path = scratch("garbage.safetensors");
    std::fs::write(&path, b"this is a text file, not tensors").unwrap();
    let err = open_err(&path);
    assert!(err.contains("not a safetensors file"), "{err}");
}

#[test]
fn truncated_and_foreign_pytorch_files_are_clear_errors() {
    let set = &fixture_sets("dualvitok")[0];
    let bytes = std::fs::read(set.dir.join("pytorch_model.bin")).unwrap();
    let truncated = scratch("truncated.bin");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = open_err(&truncated);
    assert!(err.contains("truncated"), "{err}");

    let foreign = scratch("notes.bin");
    std::fs::write(&foreign, b"hello").unwrap();
    let err = open_err(&foreign);
    assert!(err.contains("wrong header"), "{err}");

    let missing = scratch("does-not-exist.bin");
    assert!(open_err(&missing).contains("no such file"));
}

/// A minimal writer of `torch.save`-format pickles (protocol 2), enough to build state dicts
/// with float32 tensors and nested dicts, or hostile pickles.
mod torch_zip {
    pub struct Pickle(pub Vec<u8>);

    impl Pickle {
        pub fn new() -> Self {
            Pickle(vec![0x80, 2])
        }
        pub fn op(&mut self, bytes: &[u8]) -> &mut Self {
            self.0.extend_from_slice(bytes);
            self
        }
        pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
            self.op(format!("c{module}\n{name}\n").as_bytes())
        }
        pub fn str(&mut self, s: &str) -> &mut Self {
            self.0.push(b'X');
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.op(s.as_bytes())
        }
        pub fn int(&mut self, v: u32) -> &mut Self {
            self.0.push(b'J');
            self.op(&v.to_le_bytes())
        }
        pub fn tuple(&mut self, items: &[u32]) -> &mut Self {
            self.op(b"(");
            for v in items {
                self.int(*v);
            }
            self.op(b"t")
        }
        /// A float32 tensor of `shape` stored in storage `key`.
        pub fn tensor(&mut self, key: &str, shape: &[u32]) -> &mut Self {
            let numel: u32 = shape.iter().product();
            let mut strides = vec![1u32; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * shape[i + 1];
            }
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
            self.op(b"(").str("storage").global("torch", "FloatStorage");
            self.str(key).str("cpu").int(numel).op(b"tQ");
            self.int(0).tuple(shape).tuple(&strides).op(b"\x89");
            self.global("collections", "OrderedDict").op(b")R");
            self.op(b"tR")
        }
    }

    /// Write `archive/data.pkl` and the raw storages into a zip, as torch.save does.
    pub fn write(path: &std::path::Path, pickle: &[u8], storages: &[(&str, Vec<f32>)]) {
        use std::io::Write;
        let file = std::fs::File::create(path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pickle).unwrap();
        for (key, values) in storages {
            zip.start_file(format!("archive/data/{key}"), opts).unwrap();
            for v in values {
                zip.write_all(&v.to_le_bytes()).unwrap();
            }
        }
        zip.write_all(b"").unwrap();
        zip.finish().unwrap();
    }
}

#[test]
fn pickle_calling_os_system_is_refused_by_name() {
    use torch_zip::Pickle;
    let mut p = Pickle::new();
    p.global("posix", "system").str("echo pwned").op(b"\x85R.");
    let path = scratch("hostile.bin");
    torch_zip::write(&path, &p.0, &[]);
    let err = open_err(&path);
    assert!(err.contains("posix.system"), "names the callable: {err}");
    assert!(err.contains("unsafe pickle"), "{err}");

    // Hiding the callable behind NEWOBJ instead of REDUCE changes nothing.
    let mut p = Pickle::new();
    p.global("builtins", "eval").str("1").op(b"\x85)\x81.");
    torch_zip::write(&path, &p.0, &[]);
    assert!(open_err(&path).contains("builtins.eval"));
}

#[derive(Module, Debug)]
struct Tiny<B: burn::tensor::backend::Backend> {
    proj: Linear<B>,
}

/// {wrapper: {"proj.weight": [2,3], "proj.bias": [2]}} (or flat with `wrapper = None`).
fn write_tiny_state_dict(path: &Path, wrapper: Option<&str>) {
    use torch_zip::Pickle;
    let mut p = Pickle::new();
    if let Some(w) = wrapper {
        p.op(b"}").str(w);
    }
    p.op(b"}(").str("proj.weight").tensor("0", &[2, 3]);
    p.str("proj.bias").tensor("1", &[2]).op(b"u");
    if wrapper.is_some() {
        p.op(b"s");
    }
    p.op(b".");
    let weight = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    torch_zip::write(path, &p.0, &[("0", weight), ("1", vec![0.5, -0.5])]);
}

#[test]
fn flat_and_wrapped_state_dicts_load_the_same_weights() {
    let device = Default::default();
    for wrapper in [None, Some("model"), Some("state_dict"), Some("ema")] {
        let path = scratch(&format!("tiny-{}.bin", wrapper.unwrap_or("flat")));
        write_tiny_state_dict(&path, wrapper);
        let ckpt = Checkpoint::open(&path)
            .unwrap()
            .unwrap_state_dict("proj", "Tiny")
            .unwrap();
        let module = Tiny {
            proj: LinearConfig::new(3, 2).init::<NdArray>(&device),
        };
        let module = ckpt.load_into(module, &LoadOptions::named("Tiny")).unwrap();
        // torch stores Linear weights [out, in]; Burn keeps [in, out].
        let w = module
            .proj
            .weight
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(w, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0], "layout {wrapper:?}");
        let b = module
            .proj
            .bias
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(b, vec![0.5, -0.5]);
    }
}

#[test]
fn strict_load_reports_missing_unexpected_and_shape_mismatch_together() {
    let device = Default::default();
    let path = scratch("tiny-flat.safetensors");
    let weight: Vec<u8> = [1.0f32; 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    let extra: Vec<u8> = [0.0f32; 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "proj.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 4], &weight)
                .unwrap(),
        ),
        (
            "stray.bias",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &extra).unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).unwrap();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();

    let module = Tiny {
        proj: LinearConfig::new(3, 2).init::<NdArray>(&device),
    };
    let err = Checkpoint::open(&path)
        .unwrap()
        .load_into(module, &LoadOptions::named("Tiny"))
        .unwrap_err();
    let WeightsError::Mismatch(report) = &err else {
        panic!("expected a mismatch report, got {err}");
    };
    assert_eq!(report.missing, vec!["proj.bias".to_string()]);
    assert_eq!(report.unexpected, vec!["stray.bias".to_string()]);
    assert_eq!(report.shape_mismatches.len(), 1, "{err}");
    assert_eq!(report.shape_mismatches[0].0, "proj.weight");
    let text = err.to_string();
    for needle in ["proj.bias", "stray.bias", "proj.weight", "Tiny"] {
        assert!(text.contains(needle), "message names {needle}: {text}");
    }
}

#[test]
fn wrong_checkpoint_kind_is_named() {
    let set = &fixture_sets("mllm")[0];
    let err = Checkpoint::open(set.dir.join("model.safetensors"))
        .unwrap()
        .unwrap_state_dict("semantic_encoder", "DualViTok")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a DualViTok checkpoint"), "{err}");
}
