//! The vocabulary matrix (token embedding and LM head) stored in row shards.
//!
//! ILLUME+ 3B has 283,047 vocabulary rows × 2048 (2.3 GB in f32); WebGPU caps the size of
//! one storage binding, so the matrix is held as several tensors of at most
//! `rows_per_shard` vocabulary rows each. Embedding lookups gather from the shards that hold
//! the ids; the LM head multiplies by every shard and concatenates the logits, so masks,
//! arg-max and top-k downstream see one full-vocabulary row.
//!
//! Each shard is stored transposed, `[hidden, rows]`: the layout the LM head's matmul reads
//! without a copy (a transposed view would be made contiguous on every call by burn-ndarray).

use burn::tensor::{backend::Backend, Element, Int, Tensor, TensorData};
use illume_weights::Checkpoint;

use crate::error::{MllmError, Result};

/// Default shard size: the rows that fit 512 MiB in f32 (e.g. 65,536 rows at hidden 2048).
pub fn default_rows_per_shard(hidden: usize) -> usize {
    ((512usize << 20) / (hidden.max(1) * 4)).max(1)
}

#[derive(Debug, Clone)]
pub struct VocabShards<B: Backend> {
    /// `[hidden, rows_i]` each; shard `i` holds vocabulary rows `i*rows_per_shard..`.
    shards: Vec<Tensor<B, 2>>,
    rows_per_shard: usize,
    vocab: usize,
    hidden: usize,
}

impl<B: Backend> VocabShards<B> {
    /// Read the `[vocab, hidden]` matrix `name` shard by shard (cast to the compute float
    /// type; the file's bytes are read once, each shard converted on its own).
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        name: &str,
        expected: [usize; 2],
        rows_per_shard: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let found = checkpoint.shape(name).ok_or_else(|| {
            MllmError::Weights(illume_weights::WeightsError::Tensor {
                path: checkpoint.path().to_path_buf(),
                name: name.into(),
                reason: "missing from the checkpoint".into(),
            })
        })?;
        if found != expected {
            return Err(MllmError::Weights(illume_weights::WeightsError::Tensor {
                path: checkpoint.path().to_path_buf(),
                name: name.into(),
                reason: format!(
                    "shape {found:?}, the config needs {expected:?} (vocab_size, hidden_size)"
                ),
            }));
        }
        let data = checkpoint.data(name)?;
        let [vocab, hidden] = expected;
        let dtype = data.dtype;
        let row_bytes = hidden * dtype.size();
        let bytes = data.as_bytes();
        let rows_per_shard = rows_per_shard.max(1);
        let shards = (0..vocab)
            .step_by(rows_per_shard)
            .map(|start| {
                let end = (start + rows_per_shard).min(vocab);
                let chunk = TensorData::from_bytes_vec(
                    bytes[start * row_bytes..end * row_bytes].to_vec(),
                    [end - start, hidden],
                    dtype,
                );
                transposed(chunk, device)
            })
            .collect();
        Ok(Self {
            shards,
            rows_per_shard,
            vocab,
            hidden,
        })
    }

    /// Shard a `[vocab, hidden]` tensor (tests, random models).
    pub fn from_tensor(matrix: Tensor<B, 2>, rows_per_shard: usize) -> Self {
        let [vocab, hidden] = matrix.dims();
        let rows_per_shard = rows_per_shard.max(1);
        let device = matrix.device();
        let shards = (0..vocab)
            .step_by(rows_per_shard)
            .map(|start| {
                let end = (start + rows_per_shard).min(vocab);
                transposed(
                    matrix.clone().slice([start..end, 0..hidden]).into_data(),
                    &device,
                )
            })
            .collect();
        Self {
            shards,
            rows_per_shard,
            vocab,
            hidden,
        }
    }

    /// Shards filled by `fill(shard_rows)` directly in `[hidden, rows]` layout (random
    /// models for benchmarks, without building the whole matrix first).
    pub fn from_fn(
        vocab: usize,
        hidden: usize,
        rows_per_shard: usize,
        mut fill: impl FnMut(usize) -> Tensor<B, 2>,
    ) -> Self {
        let rows_per_shard = rows_per_shard.max(1);
        let shards = (0..vocab)
            .step_by(rows_per_shard)
            .map(|start| fill((start + rows_per_shard).min(vocab) - start))
            .collect();
        Self {
            shards,
            rows_per_shard,
            vocab,
            hidden,
        }
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn device(&self) -> B::Device {
        self.shards[0].device()
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Embedding rows of `ids`, `[ids.len(), hidden]`. Ids must be `< vocab` (checked by the
    /// callers that take ids from users).
    pub fn embed(&self, ids: &[u32]) -> Tensor<B, 2> {
        let device = self.shards[0].device();
        // Gather per shard, then put the rows back in the order of `ids`.
        let mut groups: Vec<(usize, Vec<i64>, Vec<usize>)> = Vec::new();
        for (position, &id) in ids.iter().enumerate() {
            let shard = id as usize / self.rows_per_shard;
            let local = (id as usize % self.rows_per_shard) as i64;
            match groups.iter_mut().find(|g| g.0 == shard) {
                Some(group) => {
                    group.1.push(local);
                    group.2.push(position);
                }
                None => groups.push((shard, vec![local], vec![position])),
            }
        }
        let gather = |shard: usize, locals: Vec<i64>| {
            let n = locals.len();
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(locals, [n]), &device);
            self.shards[shard].clone().select(1, index).transpose()
        };
        if groups.len() == 1 {
            let (shard, locals, _) = groups.pop().expect("one group");
            return gather(shard, locals);
        }
        let mut order = Vec::with_capacity(ids.len());
        let parts = groups
            .into_iter()
            .map(|(shard, locals, positions)| {
                order.extend(positions);
                gather(shard, locals)
            })
            .collect();
        // `order[j]` is the position of gathered row `j`; invert it.
        let mut inverse = vec![0i64; order.len()];
        for (j, &position) in order.iter().enumerate() {
            inverse[position] = j as i64;
        }
        let n = inverse.len();
        let inverse = Tensor::<B, 1, Int>::from_data(TensorData::new(inverse, [n]), &device);
        Tensor::cat(parts, 0).select(0, inverse)
    }

    /// LM-head logits `[n, vocab]` of hidden states `[n, hidden]`.
    pub fn logits(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        let parts: Vec<Tensor<B, 2>> = self
            .shards
            .iter()
            .map(|shard| hidden.clone().matmul(shard.clone()))
            .collect();
        if parts.len() == 1 {
            return parts.into_iter().next().expect("one shard");
        }
        Tensor::cat(parts, 1)
    }
}

/// Upload a `[rows, hidden]` block as a contiguous `[hidden, rows]` tensor.
fn transposed<B: Backend>(block: TensorData, device: &B::Device) -> Tensor<B, 2> {
    let [rows, hidden] = [block.shape[0], block.shape[1]];
    let values = block
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("float block");
    let mut out = vec![0.0f32; values.len()];
    for (r, row) in values.chunks_exact(hidden).enumerate() {
        for (h, &v) in row.iter().enumerate() {
            out[h * rows + r] = v;
        }
    }
    let data =
        TensorData::new(out, [hidden, rows]).convert_dtype(<B::FloatElem as Element>::dtype());
    Tensor::from_data(data, device)
}
