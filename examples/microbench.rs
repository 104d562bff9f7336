use candle_core::{DType, Device, Tensor};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (586, 2048), &dev)?;
    let w = Tensor::randn(0f32, 0.02, (11008, 2048), &dev)?;
    let wb = w.to_dtype(DType::BF16)?;
    for _ in 0..2 {
        let t = Instant::now();
        let y = x.matmul(&w.t()?)?;
        let _ = y.dim(0)?;
        let s = t.elapsed().as_secs_f64();
        println!("f32 matmul: {:.3}s {:.1} GFLOP/s", s, 2.0 * 586.0 * 2048.0 * 11008.0 / s / 1e9);
        let t = Instant::now();
        let wf = wb.to_dtype(DType::F32)?;
        println!("bf16->f32 convert: {:.3}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let y = x.matmul(&wf.t()?)?;
        let _ = y.dim(0)?;
        println!("f32 matmul (converted w): {:.3}s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let wt = w.t()?.contiguous()?;
        let y = x.matmul(&wt)?;
        let _ = y.dim(0)?;
        println!("f32 matmul with contiguous w^T (incl transpose): {:.3}s", t.elapsed().as_secs_f64());
    }
    Ok(())
}
