//! Linear-layer matmul backends on this machine: candle's gemm vs avflow's oneDNN path, f32 and bf16
//! weights, at the 3B decoder's MLP shape. `cargo run --example microbench` (set RAYON_NUM_THREADS /
//! OMP_NUM_THREADS to compare at a fixed thread count).
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn time(f: impl Fn() -> anyhow::Result<Tensor>) -> anyhow::Result<f64> {
    f()?; // warm-up (JIT, caches)
    let t = Instant::now();
    for _ in 0..3 {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() / 3.0)
}

fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (m, k, n) = (586, 2048, 11008);
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev)?;
    let wb = w.to_dtype(DType::BF16)?;
    let flop = 2.0 * (m * k * n) as f64;
    let candle_f32 = time(|| Ok(x.matmul(&w.t()?)?))?;
    let candle_bf16 = time(|| Ok(x.matmul(&wb.to_dtype(DType::F32)?.t()?)?))?;
    println!("backend: {}", avflow::kernels::gemm::backend_name());
    let ours = |w: &Tensor| -> anyhow::Result<Tensor> {
        match avflow::kernels::gemm::linear_cpu(&x, w, None)? {
            Some(y) => Ok(y),
            None => Ok(x.matmul(&w.to_dtype(DType::F32)?.t()?)?),
        }
    };
    let ours_f32 = time(|| ours(&w))?;
    let ours_bf16 = time(|| ours(&wb))?;
    for (name, s) in [
        ("candle f32", candle_f32),
        ("candle bf16 weights", candle_bf16),
        ("avflow f32", ours_f32),
        ("avflow bf16 weights", ours_bf16),
    ] {
        println!(
            "{name:22} {s:.4} s  {:7.1} GFLOP/s  {:.2}x vs candle f32",
            flop / s / 1e9,
            candle_f32 / s
        );
    }
    Ok(())
}
