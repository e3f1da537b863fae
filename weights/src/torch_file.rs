//! `torch.save` files (zip, or the legacy sequential format) read as data.
//!
//! We parse these ourselves rather than through burn-store's `PytorchReader`: it detects a
//! zip by its end record anywhere in the file (so a few harmless pickles followed by a zip
//! were scanned by one reader and parsed by the other), and it pads a missing, short or
//! out-of-range storage with zeros and ignores strides. Here the bytes that are scanned are
//! the bytes that are parsed, and every tensor is checked against its storage's real size
//! before a snapshot is handed out: a bad offset, size, stride or storage type is an error
//! naming the tensor, and a valid non-contiguous view is gathered correctly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::tensor::{DType, Shape, TensorData};
use burn_store::{TensorSnapshot, TensorSnapshotError};

use crate::error::WeightsError;
use crate::pickle_guard::scan_pickle;
use crate::torch_pickle::{self, StorageKind, StorageRef, TensorRecord};

/// `torch.save`'s legacy format opens with this pickle: PROTO 2, LONG1 of the magic number.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// Where one storage's bytes are in the file.
#[derive(Debug, Clone, Copy)]
struct Extent {
    start: u64,
    len: u64,
}

/// Read every tensor of a `torch.save` file, validated, as lazy snapshots keyed by name.
pub fn read(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, WeightsError> {
    let format = |reason: String| WeightsError::format(path, reason);
    let mut file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| WeightsError::io(path, e))?
        .len();
    let mut head = [0u8; 263];
    let n = read_up_to(&mut file, &mut head).map_err(|e| WeightsError::io(path, e))?;
    let head = &head[..n];
    if n < 2 {
        return Err(format("the file is empty or truncated".into()));
    }
    let (records, extents) = if head.starts_with(b"PK\x03\x04") {
        read_zip(path, file_len)?
    } else if head.starts_with(&LEGACY_MAGIC) {
        refuse_embedded_zip(path)?;
        read_legacy(path, file_len)?
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Err(format(
            "a tar-format torch file (torchvision before 0.2); re-save it with torch.save".into(),
        ));
    } else if head[0] == 0x80 {
        return Err(format(
            "a bare pickle without tensor storages, not a torch.save checkpoint".into(),
        ));
    } else {
        return Err(format(
            "neither a zip archive nor a pickle (wrong header)".into(),
        ));
    };

    let shared = Rc::new(path.to_path_buf());
    let mut tensors = BTreeMap::new();
    for (name, record) in records {
        let extent = *extents.get(&record.storage.key).ok_or_else(|| {
            tensor_error(
                path,
                &name,
                format!("its storage `{}` is not in the file", record.storage.key),
            )
        })?;
        let view = View::check(&record, extent).map_err(|r| tensor_error(path, &name, r))?;
        if tensors.contains_key(&name) {
            return Err(tensor_error(
                path,
                &name,
                "appears twice in the state dict".into(),
            ));
        }
        let snapshot = view.snapshot(shared.clone(), &name);
        tensors.insert(name, snapshot);
    }
    Ok(tensors)
}

fn tensor_error(path: &Path, name: &str, reason: String) -> WeightsError {
    WeightsError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        reason,
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A legacy file must not also be a zip: other readers (burn-store, zipfile) would open the
/// zip and parse a pickle we never saw.
fn refuse_embedded_zip(path: &Path) -> Result<(), WeightsError> {
    let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    if zip::ZipArchive::new(BufReader::new(file)).is_ok() {
        return Err(WeightsError::unsafe_pickle(
            path,
            "the file is both a legacy pickle stream and a zip archive; refusing an \
             ambiguous file",
        ));
    }
    Ok(())
}

type Contents = (Vec<(String, TensorRecord)>, BTreeMap<String, Extent>);

fn read_zip(path: &Path, file_len: u64) -> Result<Contents, WeightsError> {
    let format = |reason: String| WeightsError::format(path, reason);
    let unsafe_pickle = |reason: String| WeightsError::unsafe_pickle(path, reason);
    let file = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    let mut archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
        format(format!(
            "not a readable PyTorch zip archive ({e}); the file may be truncated"
        ))
    })?;
    if archive.offset() != 0 {
        return Err(unsafe_pickle(format!(
            "{} bytes precede the zip archive; refusing an ambiguous file",
            archive.offset()
        )));
    }
    // Every entry's location, and every pickle scanned, before anything is interpreted.
    let mut entries: BTreeMap<String, Extent> = BTreeMap::new();
    let mut main: Option<(String, Vec<u8>)> = None;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format(format!("zip entry {i}: {e}")))?;
        let name = entry.name().to_string();
        if entry.is_dir() {
            continue;
        }
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(format(format!(
                "`{name}` is compressed ({}); torch.save stores entries uncompressed, and \
                 inflating an untrusted archive is refused",
                entry.compression()
            )));
        }
        let start = entry
            .data_start()
            .ok_or_else(|| format(format!("`{name}`: no data offset")))?;
        let len = entry.size();
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(format(format!(
                "`{name}` declares {len} bytes at offset {start}, past the end of the \
                 {file_len}-byte file (truncated or corrupt)"
            )));
        }
        if name.ends_with(".pkl") {
            let mut bytes = Vec::with_capacity(len as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| format(format!("cannot read `{name}`: {e}")))?;
            scan_pickle(&bytes).map_err(|r| unsafe_pickle(format!("{name}: {r}")))?;
            if name == "data.pkl" || name.ends_with("/data.pkl") {
                if let Some((first, _)) = &main {
                    return Err(unsafe_pickle(format!(
                        "two state pickles (`{first}` and `{name}`); refusing an ambiguous file"
                    )));
                }
                main = Some((name.clone(), bytes));
            }
        }
        if name.ends_with("byteorder") {
            let mut text = String::new();
            entry
                .take(16)
                .read_to_string(&mut text)
                .map_err(|e| format(format!("cannot read `{name}`: {e}")))?;
            if text.trim() != "little" {
                return Err(format(format!(
                    "saved with byte order `{}`; only little-endian files are supported",
                    text.trim()
                )));
            }
        }
        entries.insert(name, Extent { start, len });
    }
    let (main_name, pickle) =
        main.ok_or_else(|| format("zip archive without a data.pkl: not a torch.save file".into()))?;
    let prefix = &main_name[..main_name.len() - "data.pkl".len()];
    let parsed = torch_pickle::parse(&pickle).map_err(|r| format(format!("{main_name}: {r}")))?;
    let mut extents = BTreeMap::new();
    for storage in storage_table(path, &parsed.storages)?.values() {
        let entry_name = format!("{prefix}data/{}", storage.key);
        let extent = *entries.get(&entry_name).ok_or_else(|| {
            format(format!(
                "storage `{}` (`{entry_name}`) is missing from the archive",
                storage.key
            ))
        })?;
        check_storage_len(path, storage, extent.len)?;
        extents.insert(storage.key.clone(), extent);
    }
    Ok((parsed.tensors, extents))
}

/// Each storage key once; a key described with two types or sizes would let one tensor
/// reinterpret another's bytes.
fn storage_table<'a>(
    path: &Path,
    storages: &'a [StorageRef],
) -> Result<BTreeMap<&'a str, &'a StorageRef>, WeightsError> {
    let mut table: BTreeMap<&str, &StorageRef> = BTreeMap::new();
    for s in storages {
        if let Some(prev) = table.insert(&s.key, s) {
            if prev != s {
                return Err(WeightsError::format(
                    path,
                    format!(
                        "storage `{}` is described two ways ({} x {} and {} x {})",
                        s.key, prev.numel, prev.kind.name, s.numel, s.kind.name
                    ),
                ));
            }
        }
    }
    Ok(table)
}

/// The bytes the pickle declares for a storage must be exactly the bytes present: a HalfStorage
/// tag on float32 bytes, or a storage cut short, is caught here.
fn check_storage_len(path: &Path, storage: &StorageRef, len: u64) -> Result<(), WeightsError> {
    let declared = storage
        .numel
        .checked_mul(storage.kind.element_size() as u64);
    if declared != Some(len) {
        return Err(WeightsError::format(
            path,
            format!(
                "storage `{}` is declared as {} {} elements ({} bytes) but holds {len} bytes",
                storage.key,
                storage.numel,
                storage.kind.name,
                declared.map_or("too many".into(), |d| d.to_string())
            ),
        ));
    }
    Ok(())
}

/// Legacy layout: magic, protocol, sys info, the state dict, the storage keys (five pickles),
/// then for each key in order an 8-byte element count and the raw bytes.
fn read_legacy(path: &Path, file_len: u64) -> Result<Contents, WeightsError> {
    let format = |reason: String| WeightsError::format(path, reason);
    let unsafe_pickle = |reason: String| WeightsError::unsafe_pickle(path, reason);
    let handle = File::open(path).map_err(|e| WeightsError::io(path, e))?;
    // SAFETY: read-only map, used only while parsing the pickles; a concurrent truncation of
    // the file by another process is outside what we can defend against.
    let map = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| WeightsError::io(path, e))?;
    let what = [
        "magic number",
        "protocol version",
        "system info",
        "state dict",
        "storage keys",
    ];
    let mut pos = 0usize;
    let mut parsed = Vec::new();
    for what in what {
        let rest = map.get(pos..).unwrap_or_default();
        if rest.is_empty() {
            return Err(format(format!(
                "the legacy file is truncated before its {what} pickle"
            )));
        }
        scan_pickle(rest).map_err(|r| unsafe_pickle(format!("{what} pickle: {r}")))?;
        let p = torch_pickle::parse(rest).map_err(|r| format(format!("{what} pickle: {r}")))?;
        pos += p.len;
        parsed.push(p);
    }
    if parsed[1].int != Some(1001) {
        return Err(format(format!(
            "legacy protocol version {:?}, expected 1001",
            parsed[1].int
        )));
    }
    let keys = parsed[4]
        .string_list
        .clone()
        .ok_or_else(|| format("the storage keys pickle is not a list of strings".into()))?;
    let state = parsed.swap_remove(3);
    let kinds = storage_table(path, &state.storages)?;
    let mut extents = BTreeMap::new();
    let mut at = pos as u64;
    for key in &keys {
        let storage = kinds
            .get(key.as_str())
            .ok_or_else(|| format(format!("storage `{key}` is listed but never used")))?;
        let count = map
            .get(at as usize..at as usize + 8)
            .ok_or_else(|| format(format!("the file is truncated at storage `{key}`")))?;
        let numel = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        if numel != storage.numel {
            return Err(format(format!(
                "storage `{key}` holds {numel} elements but the state dict declares {}",
                storage.numel
            )));
        }
        let len = numel
            .checked_mul(storage.kind.element_size() as u64)
            .ok_or_else(|| format(format!("storage `{key}` is impossibly large")))?;
        let start = at + 8;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= file_len)
            .ok_or_else(|| {
                format(format!(
                    "the file is truncated: storage `{key}` needs {len} bytes at offset \
                     {start} of a {file_len}-byte file"
                ))
            })?;
        extents.insert(key.clone(), Extent { start, len });
        at = end;
    }
    if at != file_len {
        return Err(format(format!(
            "{} unexplained bytes after the last storage",
            file_len - at
        )));
    }
    Ok((state.tensors, extents))
}

/// A validated tensor view: element indices into a storage that are all in range.
struct View {
    kind: StorageKind,
    extent: Extent,
    offset: u64,
    shape: Vec<usize>,
    stride: Vec<u64>,
    /// One past the largest storage index the view touches.
    span: u64,
}

impl View {
    fn check(record: &TensorRecord, extent: Extent) -> Result<Self, String> {
        let storage = &record.storage;
        if record.shape.len() != record.stride.len() {
            return Err(format!(
                "size {:?} and stride {:?} have different ranks",
                record.shape, record.stride
            ));
        }
        let offset = u64::try_from(record.offset)
            .map_err(|_| format!("negative storage offset {}", record.offset))?;
        let mut shape = Vec::with_capacity(record.shape.len());
        let mut stride = Vec::with_capacity(record.stride.len());
        let mut numel: u64 = 1;
        // Largest index reached: offset + sum((size - 1) * stride).
        let mut last = offset;
        for (&size, &step) in record.shape.iter().zip(&record.stride) {
            let size =
                u64::try_from(size).map_err(|_| format!("negative size {:?}", record.shape))?;
            let step = u64::try_from(step).map_err(|_| {
                format!(
                    "negative stride {:?} (torch never writes these)",
                    record.stride
                )
            })?;
            numel = numel
                .checked_mul(size)
                .ok_or_else(|| format!("size {:?} overflows", record.shape))?;
            if size > 0 {
                last = (size - 1)
                    .checked_mul(step)
                    .and_then(|d| last.checked_add(d))
                    .ok_or_else(|| format!("stride {:?} overflows", record.stride))?;
            }
            shape.push(usize::try_from(size).map_err(|_| "size does not fit in memory")?);
            stride.push(step);
        }
        let span = if numel == 0 {
            0
        } else {
            last.checked_add(1)
                .ok_or_else(|| format!("stride {:?} overflows", record.stride))?
        };
        if numel > 0 && span > storage.numel {
            return Err(format!(
                "offset {} with size {:?} and stride {:?} reaches element {} of storage `{}`, \
                 which has {} elements",
                record.offset, record.shape, record.stride, last, storage.key, storage.numel
            ));
        }
        // An expanded view (stride 0) would materialise more values than the file holds:
        // allocation must stay bounded by the file, so it is refused.
        if numel > storage.numel {
            return Err(format!(
                "size {:?} with stride {:?} has {numel} elements, more than the {} of storage \
                 `{}` (an expanded view; save it with .contiguous())",
                record.shape, record.stride, storage.numel, storage.key
            ));
        }
        Ok(Self {
            kind: storage.kind,
            extent,
            offset,
            shape,
            stride,
            span,
        })
    }

    fn is_contiguous(&self) -> bool {
        let mut expected = 1u64;
        for (&size, &step) in self.shape.iter().zip(&self.stride).rev() {
            if size != 1 && step != expected {
                return false;
            }
            expected *= size as u64;
        }
        true
    }

    fn snapshot(self, path: Rc<PathBuf>, name: &str) -> TensorSnapshot {
        let dtype = self.kind.dtype;
        let shape = Shape::from(self.shape.clone());
        let name_owned = name.to_string();
        let read = move || {
            self.read(&path)
                .map_err(|e| TensorSnapshotError::IoError(format!("{name_owned}: {e}")))
        };
        TensorSnapshot::from_closure(
            Rc::new(read),
            dtype,
            shape,
            name.split('.').map(str::to_owned).collect(),
            Vec::new(),
            Default::default(),
        )
    }

    fn read(&self, path: &Path) -> Result<TensorData, String> {
        let es = self.kind.element_size() as u64;
        let first = self.offset.min(self.span);
        let bytes_len = usize::try_from((self.span - first) * es).map_err(|e| e.to_string())?;
        let mut raw = vec![0u8; bytes_len];
        let mut file = File::open(path).map_err(|e| e.to_string())?;
        file.seek(SeekFrom::Start(self.extent.start + first * es))
            .map_err(|e| e.to_string())?;
        file.read_exact(&mut raw)
            .map_err(|e| format!("the file changed or is truncated: {e}"))?;
        let es = es as usize;
        let bytes = if self.is_contiguous() {
            raw
        } else {
            self.gather(&raw, first, es)
        };
        if matches!(self.kind.dtype, DType::Bool(_)) && bytes.iter().any(|b| *b > 1) {
            return Err("a bool storage holds bytes other than 0 and 1".into());
        }
        Ok(TensorData::from_bytes_vec(
            bytes,
            self.shape.clone(),
            self.kind.dtype,
        ))
    }

    /// Copy a strided view into row-major order (all indices were checked in range).
    fn gather(&self, raw: &[u8], first: u64, es: usize) -> Vec<u8> {
        let numel: usize = self.shape.iter().product();
        let mut out = Vec::with_capacity(numel * es);
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..numel {
            let element: u64 = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(&i, &s)| i as u64 * s)
                    .sum::<u64>();
            let at = (element - first) as usize * es;
            out.extend_from_slice(&raw[at..at + es]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out
    }
}
