//! Builds the optional oneDNN shim (`csrc/onednn_matmul.c`) where the oneDNN headers are installed
//! (Debian/Ubuntu: `libdnnl-dev`, which `scripts/setup.sh` installs). Without them avflow still builds and
//! uses candle's own matrix products; `AVFLOW_NO_ONEDNN=1` forces that.

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
    println!("cargo:rustc-cfg=avflow_onednn");
}
