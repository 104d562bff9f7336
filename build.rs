//! Builds the optional oneDNN shim (`csrc/onednn_matmul.c`) where oneDNN's headers are found: `DNNL_ROOT`,
//! then `.deps/onednn` (oneDNN 3.14, which `scripts/setup.sh` builds on x86-64 Linux), then the system
//! (`libdnnl-dev`). Without them avflow still builds and uses candle's own matrix products;
//! `AVFLOW_NO_ONEDNN=1` forces that. A oneDNN outside the system directories is found at run time
//! through an rpath.

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(avflow_onednn)");
    println!("cargo:rerun-if-changed=csrc/onednn_matmul.c");
    println!("cargo:rerun-if-env-changed=AVFLOW_NO_ONEDNN");
    println!("cargo:rerun-if-env-changed=DNNL_ROOT");
    if std::env::var_os("AVFLOW_NO_ONEDNN").is_some() {
        return;
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(r) = std::env::var_os("DNNL_ROOT") {
        roots.push(PathBuf::from(r));
    }
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(dir).join(".deps/onednn"));
    }
    roots.extend(["/usr", "/usr/local", "/opt/homebrew"].map(PathBuf::from));
    let Some(root) = roots
        .into_iter()
        .find(|r| r.join("include/oneapi/dnnl/dnnl.h").exists())
    else {
        println!("cargo:warning=oneDNN headers not found: CPU matrix products use candle's gemm (slower). Install libdnnl-dev for speed.");
        return;
    };
    cc::Build::new()
        .file("csrc/onednn_matmul.c")
        .include(root.join("include"))
        .opt_level(2)
        .compile("avflow_onednn");
    for lib in [
        "lib/x86_64-linux-gnu",
        "lib/aarch64-linux-gnu",
        "lib64",
        "lib",
    ] {
        let p = root.join(lib);
        if p.exists() {
            println!("cargo:rustc-link-search=native={}", p.display());
        }
    }
    println!("cargo:rustc-link-lib=dylib=dnnl");
    // avflow's own parallel passes run on the OpenMP team oneDNN uses (see `kernels::parallel`): libgomp,
    // as setup.sh builds oneDNN and as Debian packages it.
    println!("cargo:rustc-link-lib=dylib=gomp");
    if !root.starts_with("/usr") {
        println!(
            "cargo:rustc-link-arg=-Wl,-rpath,{}",
            root.join("lib").display()
        );
    }
    println!("cargo:rustc-cfg=avflow_onednn");
}
