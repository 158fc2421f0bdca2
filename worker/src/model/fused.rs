//! Fused CPU kernels, with their backward passes, for the transformer's hot spots.
//!
//! Composed from Candle's primitive ops, one PatchTST training step ran some 40 tensor
//! passes per layer norm, per attention and per GELU, each allocating a full activation;
//! the GELU's `tanh`/`powf` and the bias gradients (a sum over the leading dimension,
//! which Candle's CPU kernels do ~100x slower than along the last) took half the step
//! (`perf` on `cargo bench -p wf-worker --bench train_throughput`). Each op here does
//! one pass forward and one backward, written as plain loops over contiguous rows that
//! the compiler vectorises, spread over rows with rayon (`RAYON_NUM_THREADS`).
//!
//! Each op is a Candle `CustomOp` whose `bwd` runs a second fused kernel, so autograd
//! sees one node per op. On other devices (CUDA) the same function falls back to the
//! composed primitive ops; the tests check both paths agree, forward and backward.
//!
//! One file per op (`matmul`, `activation`, `hidden`, `norm`, `bias`, `group`,
//! `attention`), over the shared loops of `kernel`.

mod activation;
mod attention;
mod bias;
mod group;
mod hidden;
mod kernel;
mod matmul;
mod norm;

pub use activation::gelu;
pub use attention::attention;
pub use bias::add_bias;
pub use group::group_mean;
pub use hidden::{Dropout, hidden_layer, hidden_layer_backward};
pub use matmul::matmul;
pub use norm::layer_norm;

#[cfg(test)]
mod tests;
