//! Preallocated key/value cache, written in place.
//!
//! One `[rows, kv_heads, capacity, head_dim]` tensor per layer for keys and one for values,
//! allocated once for the whole generation. Each row (a sequence: the conditional prompt,
//! the unconditional CFG prompt) has its own length; a forward call writes its new keys at
//! `row, .., len..len+n` with `slice_assign` (in place when the cache tensor is the only
//! reference, which the decoder guarantees by moving it out while writing) and attends over
//! `0..len+n` of its row. Rewinding a row (the CFG stream restarting from its prompt) is
//! just setting its length back.

use burn::tensor::{backend::Backend, Tensor};

use crate::config::DecoderConfig;
use crate::error::{MllmError, Result};

#[derive(Debug)]
struct LayerCache<B: Backend> {
    // `None` only while being written (see `append`).
    keys: Option<Tensor<B, 4>>,
    values: Option<Tensor<B, 4>>,
}

#[derive(Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerCache<B>>,
    lengths: Vec<usize>,
    capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// A cache for `rows` sequences of up to `capacity` positions each.
    pub fn new(config: &DecoderConfig, rows: usize, capacity: usize, device: &B::Device) -> Self {
        let shape = [
            rows,
            config.num_key_value_heads,
            capacity,
            config.head_dim(),
        ];
        let layers = (0..config.num_hidden_layers)
            .map(|_| LayerCache {
                keys: Some(Tensor::zeros(shape, device)),
                values: Some(Tensor::zeros(shape, device)),
            })
            .collect();
        Self {
            layers,
            lengths: vec![0; rows],
            capacity,
        }
    }

    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions already stored for `row`.
    pub fn len(&self, row: usize) -> usize {
        self.lengths[row]
    }

    pub fn is_empty(&self, row: usize) -> bool {
        self.lengths[row] == 0
    }

    /// Forget everything after the first `len` positions of `row`.
    pub fn truncate(&mut self, row: usize, len: usize) {
        self.lengths[row] = self.lengths[row].min(len);
    }

    /// Check that `row` can take `n` more positions.
    pub(crate) fn reserve(&self, row: usize, n: usize) -> Result<()> {
        if row >= self.rows() {
            return Err(MllmError::Generation(format!(
                "cache row {row} does not exist (the cache has {} rows)",
                self.rows()
            )));
        }
        if self.lengths[row] + n > self.capacity {
            return Err(MllmError::Generation(format!(
                "the sequence would reach {} positions, over the cache capacity of {}",
                self.lengths[row] + n,
                self.capacity
            )));
        }
        Ok(())
    }

    /// Write `keys`/`values` (`[1, kv_heads, n, head_dim]`) of `row` at its current length
    /// in `layer`, and return all of the row's keys and values including them.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        row: usize,
        keys: Tensor<B, 4>,
        values: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [_, heads, n, dim] = keys.dims();
        let start = self.lengths[row];
        let cache = &mut self.layers[layer];
        let rows = row..row + 1;
        let write = [rows.clone(), 0..heads, start..start + n, 0..dim];
        // Move the tensors out so that `slice_assign` holds the only reference and can
        // write in place.
        let stored_keys = cache.keys.take().expect("cache keys present between calls");
        let stored_values = cache
            .values
            .take()
            .expect("cache values present between calls");
        let stored_keys = stored_keys.slice_assign(write.clone(), keys);
        let stored_values = stored_values.slice_assign(write, values);
        let read = [rows, 0..heads, 0..start + n, 0..dim];
        let all = (
            stored_keys.clone().slice(read.clone()),
            stored_values.clone().slice(read),
        );
        cache.keys = Some(stored_keys);
        cache.values = Some(stored_values);
        all
    }

    /// Record that `n` positions were written to `row` in every layer.
    pub(crate) fn advance(&mut self, row: usize, n: usize) {
        self.lengths[row] += n;
    }
}
