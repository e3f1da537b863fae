//! A data-only interpreter for the pickles `torch.save` writes.
//!
//! Nothing is ever called: the few callables a state dict needs (`OrderedDict`, the
//! tensor-rebuild functions) are recognised by name and turned into plain values; any other
//! name is refused by [`pickle_guard::check_global`]. Every tensor comes out as a
//! [`TensorRecord`] (storage, offset, shape, strides) that the container reader checks
//! against the real storage bytes before anything is read. Memory is bounded by the pickle's
//! own size: memo copies are charged against a budget and nesting depth is capped, so a few
//! bytes cannot expand into gigabytes or overflow the stack.

use std::collections::HashMap;

use burn::tensor::{BoolStore, DType};

use crate::pickle_guard::check_global;

/// Deeper nesting than this is not a state dict (they are ~6 levels deep).
const MAX_DEPTH: u32 = 64;

/// A storage's element type, as named by its `torch.*Storage` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageKind {
    pub name: &'static str,
    pub dtype: DType,
}

impl StorageKind {
    fn from_class(name: &str) -> Option<Self> {
        const KINDS: &[(&str, DType)] = &[
            ("DoubleStorage", DType::F64),
            ("FloatStorage", DType::F32),
            ("HalfStorage", DType::F16),
            ("BFloat16Storage", DType::BF16),
            ("LongStorage", DType::I64),
            ("IntStorage", DType::I32),
            ("ShortStorage", DType::I16),
            ("CharStorage", DType::I8),
            ("ByteStorage", DType::U8),
            ("BoolStorage", DType::Bool(BoolStore::Native)),
        ];
        KINDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(name, dtype)| Self { name, dtype })
    }

    pub fn element_size(&self) -> usize {
        self.dtype.size()
    }
}

/// One storage as the pickle's persistent id describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub kind: StorageKind,
    pub key: String,
    /// Number of elements the pickle declares for the whole storage.
    pub numel: u64,
}

/// A tensor view into a storage, exactly as the pickle records it (not yet validated
/// against the storage bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRecord {
    pub storage: StorageRef,
    pub offset: i64,
    pub shape: Vec<i64>,
    pub stride: Vec<i64>,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Seq(Vec<Value>, u32),
    Dict(Vec<(Value, Value)>, u32),
    Global(String, String),
    Storage(StorageRef),
    Tensor(TensorRecord),
    /// Data a state dict does not need (bytes, big integers, BUILD states).
    Opaque,
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Seq(_, d) | Value::Dict(_, d) => *d,
            Value::Tensor(_) => 2,
            _ => 0,
        }
    }

    /// Nodes in this value: what a memo copy of it costs.
    fn weight(&self) -> usize {
        match self {
            Value::Seq(items, _) => 1 + items.iter().map(Value::weight).sum::<usize>(),
            Value::Dict(items, _) => {
                1 + items
                    .iter()
                    .map(|(k, v)| k.weight() + v.weight())
                    .sum::<usize>()
            }
            Value::Str(s) => 1 + s.len() / 16,
            Value::Tensor(t) => 4 + t.shape.len() * 2,
            _ => 1,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Float => "a float",
            Value::Str(_) => "a string",
            Value::Seq(..) => "a tuple or list",
            Value::Dict(..) => "a dict",
            Value::Global(..) => "a class",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
            Value::Opaque => "an unsupported object",
        }
    }
}

fn seq(items: Vec<Value>) -> Result<Value, String> {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    check_depth(depth)?;
    Ok(Value::Seq(items, depth))
}

fn check_depth(depth: u32) -> Result<(), String> {
    if depth > MAX_DEPTH {
        Err(format!(
            "objects nested more than {MAX_DEPTH} levels deep: not a state dict"
        ))
    } else {
        Ok(())
    }
}

/// What one pickle holds, as far as a checkpoint reader cares.
pub struct Parsed {
    /// Tensors found under string-keyed dicts, names joined with `.`.
    pub tensors: Vec<(String, TensorRecord)>,
    /// Every storage a persistent id named.
    pub storages: Vec<StorageRef>,
    /// The pickled value when it is a list of strings (the legacy format's storage keys).
    pub string_list: Option<Vec<String>>,
    /// The pickled value when it is an int (the legacy format's magic and protocol).
    pub int: Option<i64>,
    /// Bytes consumed, through STOP.
    pub len: usize,
}

/// Interpret one pickle starting at `data[0]`.
pub fn parse(data: &[u8]) -> Result<Parsed, String> {
    let mut vm = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        // Memo copies may not expand the pickle by more than this factor (plus slack).
        budget: data.len().saturating_mul(4).saturating_add(1 << 20),
        storages: Vec::new(),
    };
    let value = vm.run()?;
    let mut tensors = Vec::new();
    collect_tensors(&value, &mut String::new(), &mut tensors);
    let string_list = match &value {
        Value::Seq(items, _) => items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let int = match value {
        Value::Int(i) => Some(i),
        _ => None,
    };
    Ok(Parsed {
        tensors,
        storages: vm.storages,
        string_list,
        int,
        len: vm.pos,
    })
}

fn collect_tensors(value: &Value, prefix: &mut String, out: &mut Vec<(String, TensorRecord)>) {
    match value {
        Value::Tensor(t) => out.push((prefix.clone(), t.clone())),
        Value::Dict(items, _) => {
            for (key, item) in items {
                let Value::Str(key) = key else { continue };
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(key);
                collect_tensors(item, prefix, out);
                prefix.truncate(len);
            }
        }
        _ => {}
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    budget: usize,
    storages: Vec<StorageRef>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or("the pickle stream is truncated")?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn le(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("the pickle stream is truncated")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn len_prefixed(&mut self, width: usize) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.le(width)?).map_err(|_| "length does not fit")?;
        self.take(len)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at byte {}", self.pos));
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("MARK missing")?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at byte {}", self.pos));
        }
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn charge(&mut self, v: &Value) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(v.weight())
            .ok_or("memo copies expand the pickle far beyond its size (a pickle bomb)")?;
        Ok(())
    }

    fn memo_put(&mut self, idx: u64) -> Result<(), String> {
        let v = self.top()?.clone();
        self.charge(&v)?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<(), String> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| format!("memo entry {idx} read before it is written"))?;
        self.charge(&v)?;
        self.push(v);
        Ok(())
    }

    /// Append `items` to the list/dict under them on the stack.
    fn extend_top(&mut self, items: Vec<Value>, pairs: bool) -> Result<(), String> {
        let child_depth = items.iter().map(Value::depth).max().unwrap_or(0) + 1;
        check_depth(child_depth)?;
        match self.top()? {
            Value::Seq(list, depth) if !pairs => {
                *depth = (*depth).max(child_depth);
                list.extend(items);
            }
            Value::Dict(dict, depth) if pairs => {
                if !items.len().is_multiple_of(2) {
                    return Err("SETITEMS with an odd number of values".into());
                }
                *depth = (*depth).max(child_depth);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.push((k, v));
                }
            }
            other => {
                return Err(format!(
                    "cannot add items to {} at byte {}",
                    other.describe(),
                    self.pos
                ))
            }
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let op = self.take(1)?[0];
            match op {
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                0x80 => {
                    self.take(1)?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'(' => self.marks.push(self.stack.len()),
                b')' => self.push(seq(Vec::new())?),
                b']' => self.push(seq(Vec::new())?),
                b'}' | 0x8f => self.push(Value::Dict(Vec::new(), 1)),
                b't' | b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.push(seq(items)?);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(seq(items)?);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new(), 1));
                    self.extend_top(items, true)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_top(vec![v], false)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, false)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_top(vec![k, v], true)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, true)?;
                }
                0x90 => {
                    // ADDITEMS to a set: sets are never part of a state dict; keep the shape.
                    self.pop_mark()?;
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool),
                0x89 => self.push(Value::Bool),
                b'I' => {
                    let text = self.line()?;
                    self.push(match text.as_str() {
                        "01" => Value::Bool,
                        "00" => Value::Bool,
                        t => Value::Int(t.trim().parse().map_err(|_| "bad INT literal")?),
                    });
                }
                b'L' => {
                    let text = self.line()?;
                    let t = text.trim().trim_end_matches('L');
                    self.push(t.parse().map(Value::Int).unwrap_or(Value::Opaque));
                }
                b'J' => {
                    let v = self.le(4)? as u32 as i32 as i64;
                    self.push(Value::Int(v));
                }
                b'K' => {
                    let v = self.le(1)? as i64;
                    self.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.le(2)? as i64;
                    self.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    let bytes = self.len_prefixed(if op == 0x8a { 1 } else { 4 })?;
                    self.push(long(bytes));
                }
                b'F' => {
                    self.line()?;
                    self.push(Value::Float);
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float);
                }
                b'S' => {
                    let text = self.line()?;
                    let t = text.trim();
                    let unquoted = t
                        .strip_prefix('\'')
                        .and_then(|t| t.strip_suffix('\''))
                        .or_else(|| t.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
                        .unwrap_or(t);
                    self.push(Value::Str(unquoted.to_owned()));
                }
                b'V' => {
                    let text = self.line()?;
                    self.push(Value::Str(text));
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let width = match op {
                        0x8c | b'U' => 1,
                        0x8d => 8,
                        _ => 4,
                    };
                    let bytes = self.len_prefixed(width)?;
                    self.push(Value::Str(String::from_utf8_lossy(bytes).into_owned()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let width = match op {
                        b'C' => 1,
                        b'B' => 4,
                        _ => 8,
                    };
                    self.len_prefixed(width)?;
                    self.push(Value::Opaque);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.charge(&v)?;
                    self.push(v);
                }
                b'p' => {
                    let idx = self.line()?.trim().parse().map_err(|_| "bad PUT index")?;
                    self.memo_put(idx)?;
                }
                b'q' => {
                    let idx = self.le(1)?;
                    self.memo_put(idx)?;
                }
                b'r' => {
                    let idx = self.le(4)?;
                    self.memo_put(idx)?;
                }
                0x94 => {
                    let idx = self.memo.len() as u64;
                    self.memo_put(idx)?;
                }
                b'g' => {
                    let idx = self.line()?.trim().parse().map_err(|_| "bad GET index")?;
                    self.memo_get(idx)?;
                }
                b'h' => {
                    let idx = self.le(1)?;
                    self.memo_get(idx)?;
                }
                b'j' => {
                    let idx = self.le(4)?;
                    self.memo_get(idx)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    check_global(&module, &name)?;
                    self.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(
                            "STACK_GLOBAL with a computed module or name (not string literals)"
                                .into(),
                        );
                    };
                    check_global(&module, &name)?;
                    self.push(Value::Global(module, name));
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(callable, args)?;
                    self.push(v);
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = call(callable, args)?;
                    self.push(v);
                }
                b'b' => {
                    // BUILD sets attributes (an OrderedDict's `_metadata`); the state dict's
                    // contents do not depend on it.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_load(pid)?;
                    self.storages.push(storage.clone());
                    self.push(Value::Storage(storage));
                }
                b'P' => return Err("text persistent ids (PERSID) are not used by torch".into()),
                b'o' | b'i' => {
                    return Err("OBJ/INST object construction is not used by torch.save".into())
                }
                0x82..=0x84 => {
                    return Err("extension-registry callables (EXT1/2/4) are not allowed".into())
                }
                0x97 | 0x98 => return Err("out-of-band pickle buffers are not allowed".into()),
                other => {
                    return Err(format!(
                        "unknown pickle opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

/// A little-endian two's-complement integer of any width; wider than i64 is opaque.
fn long(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() > 8 {
        return Value::Opaque;
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

fn items(args: Value, what: &str) -> Result<Vec<Value>, String> {
    match args {
        Value::Seq(items, _) => Ok(items),
        other => Err(format!(
            "{what}: arguments are {}, not a tuple",
            other.describe()
        )),
    }
}

fn int_tuple(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    match v {
        Value::Seq(items, _) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) => Ok(*n),
                other => Err(format!("{what} holds {}, not an int", other.describe())),
            })
            .collect(),
        other => Err(format!("{what} is {}, not a tuple", other.describe())),
    }
}

/// What the allowed callables produce, computed as data.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Err(format!("a call of {}", callable.describe()));
    };
    let args = items(args, &format!("{module}.{name}"))?;
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Vec::new(), 1)),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            rebuild_tensor(args)
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let mut it = args.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(func), Some(_type), Some(inner)) => call(func, inner),
                _ => Err("_rebuild_from_type_v2 with fewer than 3 arguments".into()),
            }
        }
        ("torch", "Size") => args
            .into_iter()
            .next()
            .ok_or_else(|| "torch.Size without arguments".into()),
        _ => Err(format!(
            "`{module}.{name}` is allowed by name but is not a constructor this reader rebuilds"
        )),
    }
}

fn rebuild_tensor(args: Vec<Value>) -> Result<Value, String> {
    if args.len() < 4 {
        return Err(format!(
            "_rebuild_tensor with {} arguments, expected at least 4",
            args.len()
        ));
    }
    let Value::Storage(storage) = &args[0] else {
        return Err(format!(
            "_rebuild_tensor: the storage is {}",
            args[0].describe()
        ));
    };
    let Value::Int(offset) = args[1] else {
        return Err(format!(
            "_rebuild_tensor: the storage offset is {}",
            args[1].describe()
        ));
    };
    let shape = int_tuple(&args[2], "the tensor size")?;
    let stride = int_tuple(&args[3], "the tensor stride")?;
    Ok(Value::Tensor(TensorRecord {
        storage: storage.clone(),
        offset,
        shape,
        stride,
    }))
}

/// `('storage', torch.XStorage, key, location, numel[, view_metadata])`.
fn persistent_load(pid: Value) -> Result<StorageRef, String> {
    let pid = items(pid, "persistent id")?;
    let tag = pid.first();
    if !matches!(tag, Some(Value::Str(s)) if s == "storage") || pid.len() < 5 {
        return Err(
            "a persistent id that is not a ('storage', type, key, location, numel) tuple".into(),
        );
    }
    let kind = match &pid[1] {
        Value::Global(_, class) => StorageKind::from_class(class),
        Value::Str(class) => StorageKind::from_class(class),
        _ => None,
    }
    .ok_or_else(|| format!("storage type {:?} is not a torch storage class", pid[1]))?;
    let Value::Str(key) = &pid[2] else {
        return Err("a storage key that is not a string".into());
    };
    let numel = match pid[4] {
        Value::Int(n) if n >= 0 => n as u64,
        ref other => {
            return Err(format!(
                "storage `{key}` declares {} elements",
                match other {
                    Value::Int(n) => n.to_string(),
                    v => v.describe().to_string(),
                }
            ))
        }
    };
    if let Some(view) = pid.get(5) {
        if !matches!(view, Value::None) {
            return Err(format!(
                "storage `{key}` is a legacy storage view; re-save the checkpoint with a recent torch"
            ));
        }
    }
    Ok(StorageRef {
        kind,
        key: key.clone(),
        numel,
    })
}
