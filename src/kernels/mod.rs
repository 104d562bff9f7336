//! CPU kernels: the matrix products (oneDNN, candle's gemm otherwise) and the element-wise passes around
//! them, on one thread team. Independent of any model: nothing here imports `model`, so the models use
//! these kernels and never the other way round. Its own folder because the products and the passes used
//! to import each other inside `model`; here the order is one-way: `parallel` and `bf16` depend on
//! nothing in `kernels`, `simd` on those two, `gemm` on all three.

pub mod bf16;
pub mod gemm;
pub mod parallel;
pub mod simd;
