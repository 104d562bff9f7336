//! The module boundaries ARCHITECTURE.md promises, checked on the source: the top-level modules form
//! layers without cycles, the CLI, the worker, the batch runner and the app lean on no shell beside them,
//! and no file outside a family's folder names that family's types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every top-level library module and the modules it may import (production code; a module's own tests
/// may reach further up). Bottom up: what comes later may use what comes earlier, never the reverse.
const LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("device", &["error"]),
    ("tensor_io", &["error"]),
    ("kernels", &["error"]),
    ("prompt", &["error"]),
    ("media", &["error", "prompt", "tensor_io"]),
    (
        "model",
        &["error", "kernels", "prompt", "media", "tensor_io"],
    ),
    ("flow", &["error", "kernels", "prompt", "model"]),
    (
        "session",
        &[
            "error",
            "device",
            "prompt",
            "media",
            "model",
            "flow",
            "tensor_io",
        ],
    ),
    ("export", &["error", "prompt", "flow", "tensor_io"]),
    (
        "batch",
        &[
            "error",
            "prompt",
            "media",
            "flow",
            "session",
            "export",
            "tensor_io",
        ],
    ),
    (
        "worker",
        &[
            "error",
            "device",
            "prompt",
            "media",
            "model",
            "flow",
            "session",
            "tensor_io",
        ],
    ),
    (
        "ui",
        &[
            "error",
            "device",
            "prompt",
            "media",
            "model",
            "flow",
            "session",
            "export",
            "worker",
            "tensor_io",
            "kernels",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Production code of a file: test-only files are skipped, and a file's `#[cfg(test)] mod …` (at its end,
/// by this crate's convention) is cut off.
fn production(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name.ends_with("_tests.rs") || name == "test_support.rs" {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let cut = text.find("\n#[cfg(test)]\nmod ").unwrap_or(text.len());
    Some(text[..cut].to_string())
}

/// `crate::X` names in `code`, comments and doc comments included (a doc link is a dependency a reader
/// follows too).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The top-level module a file belongs to (`src/model/omni/audio.rs` → `model`).
fn top_module(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

#[test]
fn top_level_modules_form_layers_without_cycles() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let Some(top) = top_module(f) else { continue };
        // The binary (`main.rs` and its `cli/` shells) sits above everything.
        if top == "main" || top == "cli" || top == "lib" {
            continue;
        }
        let Some(ok) = allowed.get(top.as_str()) else {
            problems.push(format!(
                "{}: top-level module `{top}` is not in this test's LAYERS (add it where it belongs)",
                f.display()
            ));
            continue;
        };
        let Some(code) = production(f) else { continue };
        for r in crate_refs(&code) {
            if r == top || matches!(r.as_str(), "Error" | "Result") {
                continue;
            }
            if !ok.contains(&r.as_str()) {
                problems.push(format!("{}: `{top}` imports `crate::{r}`", f.display()));
            }
        }
    }
    // The table itself must be layered: each module only names modules listed before it.
    for (i, (m, deps)) in LAYERS.iter().enumerate() {
        for d in *deps {
            let j = LAYERS.iter().position(|(n, _)| n == d);
            assert!(
                j.is_some_and(|j| j < i),
                "LAYERS: {m} depends on {d}, which is not below it"
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cli_lives_in_the_binary_and_no_library_module_reaches_it() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    assert!(
        !lib.contains("pub mod cli"),
        "cli must not be a library module"
    );
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        if top_module(&f).as_deref() != Some("cli") && top_module(&f).as_deref() != Some("main") {
            assert!(
                !text.contains("crate::cli") && !text.contains("avflow::cli"),
                "{} reaches into the CLI",
                f.display()
            );
        }
    }
}

/// `name` as a word of `text` (`Qwen2_5OmniThinkerTextModel`, a transformers class a doc comment cites,
/// is not `OmniThinker`).
fn names_word(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// A model family's types are named only inside its folder; everything else goes through
/// `model::{Architecture, AvModel, Prompt}`.
#[test]
fn family_types_stay_in_their_folder() {
    const FAMILIES: &[(&str, &[&str])] = &[
        (
            "omni",
            &[
                "OmniThinker",
                "OmniInputs",
                "OmniArch",
                "ThinkerConfig",
                "model::omni",
                "omni::",
            ],
        ),
        (
            "salmonn",
            &[
                "SalmonnArch",
                "SalmonnModel",
                "SalmonnConfig",
                "SalmonnInputs",
                "AudioBranch",
                "model::salmonn",
                "salmonn::",
            ],
        ),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for dir in ["tests", "examples"] {
        rust_files(&root.join(dir), &mut files);
    }
    let registry_file = src().join("model").join("mod.rs");
    let registry = production(&registry_file).expect("model/mod.rs");
    let registry_code: String = registry
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut problems = Vec::new();
    for (family, names) in FAMILIES {
        let family_dir = src().join("model").join(family);
        for f in &files {
            // The registry names each family's entry once (`omni::FAMILY`).
            if f.starts_with(&family_dir) || *f == registry_file {
                continue;
            }
            if f.file_name().is_some_and(|n| n == "architecture.rs") {
                continue;
            }
            let text = std::fs::read_to_string(f).expect("read");
            for name in *names {
                if names_word(&text, name) {
                    problems.push(format!("{} names `{name}`", f.display()));
                }
            }
        }
        // The registry's code names each family twice: its module and its FAMILIES entry.
        assert_eq!(
            registry_code.matches(&format!("mod {family};")).count(),
            1,
            "{family}"
        );
        assert_eq!(
            registry_code.matches(&format!("{family}::")).count(),
            1,
            "only `{family}::FAMILY` in FAMILIES"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
