//! `pil_resize_rgb` against Pillow itself, byte for byte, on seeded random RGB images.
//!
//! Needs a Python with Pillow: set `ILLUME_PILLOW_PYTHON` to its executable (the CI does).
//! Unset, the test says so and passes; set but failing to run Pillow, it fails. Pillow
//! computes the expected bytes in this run (`tests/pillow_resize.py`), all cases in one
//! process.
//!
//! Cases, for each filter the pipeline uses (BICUBIC, LANCZOS):
//! - every (input, output) side pair in 1..=64 on each axis: width only, height only, both
//!   axes changing in opposite directions (`(i, o) → (o, i)`, which exercises both pass
//!   orders), and both axes with a random other pair;
//! - 300 random pairs with sides up to 1024 (log-uniform, so most are cheap): upscale,
//!   downscale, one axis only, mixed;
//! - the 90×50 → 96×48 (width × height) and a few large resizes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use illume_dualvitok::pil_resize::{pil_resize_rgb, PilFilter};
use image::RgbImage;

const FILTERS: [(PilFilter, u8); 2] = [(PilFilter::Bicubic, 0), (PilFilter::Lanczos, 1)];

/// SplitMix64: a seeded, dependency-free source of image bytes and sizes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=max`.
    fn side(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }

    /// Log-uniform in `1..=max`: small sides as likely as large ones per octave.
    fn log_side(&mut self, max: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((max as f64).powf(u).round() as usize).clamp(1, max)
    }

    fn image(&mut self, width: usize, height: usize) -> RgbImage {
        let bytes = (0..width * height * 3).map(|_| self.next() as u8).collect();
        RgbImage::from_raw(width as u32, height as u32, bytes).expect("sized buffer")
    }
}

/// `(in_w, in_h, out_w, out_h)`.
type Sizes = (usize, usize, usize, usize);

fn size_pairs(rng: &mut Rng) -> Vec<Sizes> {
    let mut pairs = Vec::new();
    for i in 1..=64 {
        for o in 1..=64 {
            pairs.push((i, 3, o, 3));
            pairs.push((3, i, 3, o));
            pairs.push((i, o, o, i));
            let (j, k) = (rng.side(64), rng.side(64));
            pairs.push((i, j, o, k));
        }
    }
    for n in 0..300 {
        let (a, b, c, d) = (
            rng.log_side(1024),
            rng.log_side(1024),
            rng.log_side(1024),
            rng.log_side(1024),
        );
        let (lo_w, hi_w) = (a.min(c), a.max(c));
        let (lo_h, hi_h) = (b.min(d), b.max(d));
        pairs.push(match n % 5 {
            0 => (lo_w, lo_h, hi_w, hi_h), // upscale
            1 => (hi_w, hi_h, lo_w, lo_h), // downscale
            2 => (a, b, c, b),             // width only
            3 => (a, b, a, d),             // height only
            _ => (a, b, c, d),             // anything
        });
    }
    // The understanding image (90 wide, 50 high, smart-resized to 96x48), its
    // transpose, and large resizes in both directions.
    pairs.extend([
        (90, 50, 96, 48),
        (50, 90, 48, 96),
        (1024, 768, 512, 384),
        (333, 1024, 1024, 1000),
        (1000, 1000, 1024, 999),
        (1024, 1024, 17, 1024),
    ]);
    pairs
}

fn pillow_python() -> Option<PathBuf> {
    std::env::var_os("ILLUME_PILLOW_PYTHON").map(PathBuf::from)
}

#[test]
fn pil_resize_matches_pillow_byte_for_byte() {
    let Some(python) = pillow_python() else {
        eprintln!(
            "SKIPPED pil_resize_matches_pillow_byte_for_byte: set ILLUME_PILLOW_PYTHON to a \
             python executable with Pillow installed"
        );
        return;
    };
    let start = Instant::now();
    let mut rng = Rng(0x5EED_0016);
    let pairs = size_pairs(&mut rng);
    let dir = std::env::temp_dir().join(format!("illume-pillow-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cases_path, expected_path) = (dir.join("cases.bin"), dir.join("expected.bin"));

    // Inputs and Rust outputs, in the order the script will answer.
    let mut cases = Vec::new();
    let mut ours: Vec<(u8, Sizes, Vec<u8>)> = Vec::new();
    for (filter, code) in FILTERS {
        for &(in_w, in_h, out_w, out_h) in &pairs {
            let image = rng.image(in_w, in_h);
            cases.push(code);
            for side in [in_w, in_h, out_w, out_h] {
                cases.extend_from_slice(&(side as u32).to_le_bytes());
            }
            cases.extend_from_slice(image.as_raw());
            let resized = pil_resize_rgb(&image, out_w, out_h, filter)
                .unwrap_or_else(|e| panic!("{filter:?} {in_w}x{in_h} -> {out_w}x{out_h}: {e}"));
            ours.push((code, (in_w, in_h, out_w, out_h), resized.into_raw()));
        }
    }
    std::fs::write(&cases_path, &cases).expect("write the cases");
    let rust_seconds = start.elapsed().as_secs_f64();

    let version = run_pillow(&python, &cases_path, &expected_path);
    let expected = std::fs::read(&expected_path).expect("read Pillow's output");
    std::fs::remove_dir_all(&dir).ok();

    let total: usize = ours.iter().map(|(_, _, bytes)| bytes.len()).sum();
    assert_eq!(
        expected.len(),
        total,
        "Pillow {version} returned {} bytes for {} cases, expected {total}",
        expected.len(),
        ours.len()
    );
    let mut offset = 0;
    let mut differing = Vec::new();
    for (code, (in_w, in_h, out_w, out_h), bytes) in &ours {
        let theirs = &expected[offset..offset + bytes.len()];
        offset += bytes.len();
        if let Some(i) = (0..bytes.len()).find(|&i| bytes[i] != theirs[i]) {
            let count = bytes.iter().zip(theirs).filter(|(a, b)| a != b).count();
            differing.push(format!(
                "filter {code} {in_w}x{in_h} -> {out_w}x{out_h}: {count} bytes differ, first at \
                 pixel ({}, {}) channel {}: ours {} Pillow {}",
                (i / 3) % out_w,
                i / 3 / out_w,
                i % 3,
                bytes[i],
                theirs[i]
            ));
        }
    }
    eprintln!(
        "{} resizes ({} size pairs x {} filters) against Pillow {version}: {} differ; \
         {:.1} s (Rust side {rust_seconds:.1} s)",
        ours.len(),
        pairs.len(),
        FILTERS.len(),
        differing.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        differing.is_empty(),
        "{} of {} resizes differ from Pillow {version}:\n{}",
        differing.len(),
        ours.len(),
        differing[..differing.len().min(20)].join("\n")
    );
}

/// Runs the Pillow script; panics with its output if it fails. Returns Pillow's version.
fn run_pillow(python: &Path, cases: &Path, expected: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pillow_resize.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(cases)
        .arg(expected)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "ILLUME_PILLOW_PYTHON={}: cannot run it: {e}",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "ILLUME_PILLOW_PYTHON={} {} failed ({}):\n{}",
        python.display(),
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
