//! A static scan of PyTorch pickles before anything interprets them.
//!
//! The interpreter (`torch_pickle`) never calls anything, but we want a stronger
//! promise: a checkpoint that so much as *names* a callable outside the handful needed to
//! rebuild tensors and `OrderedDict`s is rejected, with the callable named in the error.
//! The scan walks every opcode once (no stack semantics beyond what is needed to know the
//! operands of `STACK_GLOBAL`) and is cheap next to reading the tensors.

/// The only globals a `torch.save(state_dict)` pickle needs.
const ALLOWED_GLOBALS: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
    ("torch", "Tensor"),
    ("torch", "Size"),
];

pub(crate) fn check_global(module: &str, name: &str) -> Result<(), String> {
    if ALLOWED_GLOBALS
        .iter()
        .any(|(m, n)| *m == module && *n == name)
    {
        Ok(())
    } else {
        Err(format!(
            "the pickle asks for the callable `{module}.{name}`; only tensor rebuilds, torch \
             storages and collections.OrderedDict are accepted (this loader never executes \
             checkpoint code)"
        ))
    }
}

/// Walk one pickle; returns the number of bytes it spans (through STOP).
pub fn scan_pickle(data: &[u8]) -> Result<usize, String> {
    let mut pos = 0usize;
    // The last two values pushed, when they were string literals: the operands of STACK_GLOBAL.
    let mut recent: [Option<String>; 2] = [None, None];
    let mut memo: std::collections::HashMap<u64, Option<String>> = Default::default();
    let truncated = || "the pickle stream is truncated".to_string();

    let take = |pos: &mut usize, n: usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= data.len())
            .ok_or_else(truncated)?;
        let slice = &data[*pos..end];
        *pos = end;
        Ok(slice)
    };
    let line = |pos: &mut usize| -> Result<String, String> {
        let rest = &data[*pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(truncated)?;
        *pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };
    let le = |bytes: &[u8]| {
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64)
    };

    loop {
        let op = *take(&mut pos, 1)?.first().expect("one byte");
        let mut pushed_string: Option<String> = None;
        let mut keeps_recent = false;
        match op {
            b'.' => return Ok(pos),
            // Opcodes without operands.
            b'(' | b'0' | b'1' | b'2' | b'N' | 0x88 | 0x89 | b')' | b't' | 0x85 | 0x86 | 0x87
            | b']' | b'a' | b'e' | b'l' | b'}' | b'd' | b's' | b'u' | 0x8f | 0x90 | 0x91 | b'R'
            | b'b' | b'o' | 0x81 | 0x92 | b'Q' => {}
            0x94 => {
                let idx = memo.len() as u64;
                memo.insert(idx, recent[1].clone());
                keeps_recent = true;
            }
            b'F' | b'I' | b'L' | b'P' => {
                line(&mut pos)?;
            }
            b'S' | b'V' => pushed_string = Some(line(&mut pos)?),
            b'g' => {
                let idx: u64 = line(&mut pos)?
                    .trim()
                    .parse()
                    .map_err(|_| "bad GET index")?;
                pushed_string = memo.get(&idx).cloned().flatten();
            }
            b'p' => {
                let idx: u64 = line(&mut pos)?
                    .trim()
                    .parse()
                    .map_err(|_| "bad PUT index")?;
                memo.insert(idx, recent[1].clone());
                keeps_recent = true;
            }
            b'J' => {
                take(&mut pos, 4)?;
            }
            b'K' => {
                take(&mut pos, 1)?;
            }
            b'M' => {
                take(&mut pos, 2)?;
            }
            b'G' => {
                take(&mut pos, 8)?;
            }
            0x80 => {
                take(&mut pos, 1)?;
                keeps_recent = true;
            }
            0x95 => {
                take(&mut pos, 8)?;
                keeps_recent = true;
            }
            b'h' => {
                let idx = le(take(&mut pos, 1)?);
                pushed_string = memo.get(&idx).cloned().flatten();
            }
            b'j' => {
                let idx = le(take(&mut pos, 4)?);
                pushed_string = memo.get(&idx).cloned().flatten();
            }
            b'q' => {
                let idx = le(take(&mut pos, 1)?);
                memo.insert(idx, recent[1].clone());
                keeps_recent = true;
            }
            b'r' => {
                let idx = le(take(&mut pos, 4)?);
                memo.insert(idx, recent[1].clone());
                keeps_recent = true;
            }
            // Length-prefixed strings and bytes.
            b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                let width = match op {
                    0x8c | b'U' => 1,
                    0x8d => 8,
                    _ => 4,
                };
                let len = le(take(&mut pos, width)?) as usize;
                let bytes = take(&mut pos, len)?;
                pushed_string = Some(String::from_utf8_lossy(bytes).into_owned());
            }
            b'B' | b'C' | 0x8e | 0x96 | 0x8a | 0x8b => {
                let width = match op {
                    b'C' | 0x8a => 1,
                    0x8e | 0x96 => 8,
                    _ => 4,
                };
                let len = le(take(&mut pos, width)?) as usize;
                take(&mut pos, len)?;
            }
            b'c' | b'i' => {
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                check_global(&module, &name)?;
            }
            0x93 => match (&recent[0], &recent[1]) {
                (Some(module), Some(name)) => check_global(module, name)?,
                _ => {
                    return Err(
                        "STACK_GLOBAL with a computed module or name (not string literals)".into(),
                    )
                }
            },
            0x82..=0x84 => {
                return Err("extension-registry callables (EXT1/2/4) are not allowed".into())
            }
            0x97 | 0x98 => return Err("out-of-band pickle buffers are not allowed".into()),
            other => {
                return Err(format!(
                    "unknown pickle opcode 0x{other:02x} at byte {}",
                    pos - 1
                ))
            }
        }
        if !keeps_recent {
            recent = [recent[1].take(), pushed_string];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    #[test]
    fn accepts_ordered_dict() {
        let mut p = vec![0x80, 2];
        p.extend(global("collections", "OrderedDict"));
        p.extend(b")R.");
        assert_eq!(scan_pickle(&p), Ok(p.len()));
    }

    #[test]
    fn rejects_os_system_by_name() {
        let mut p = vec![0x80, 2];
        p.extend(global("posix", "system"));
        p.extend(b"X\x02\x00\x00\x00ls\x85R.");
        let err = scan_pickle(&p).unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
    }

    #[test]
    fn rejects_stack_global_outside_allowlist() {
        let mut p = vec![0x80, 4];
        p.extend(b"\x8c\x02os\x94\x8c\x06system\x94\x93.");
        let err = scan_pickle(&p).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn rejects_truncation() {
        let p = vec![0x80, 2, b'X', 9, 0, 0, 0, b'a'];
        assert!(scan_pickle(&p).unwrap_err().contains("truncated"));
    }
}
