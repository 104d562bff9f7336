//! The "Open…" file dialog, with a typed-path fallback where no dialog can open.
//!
//! On Linux rfd talks to the XDG desktop portal over the session D-Bus and falls back to `zenity`; with
//! neither (a bare X server, a container, Xvfb) it returns "nothing chosen" without showing anything, so
//! we check first and tell the user to type the path instead.

use std::path::{Path, PathBuf};

use crossbeam_channel::Receiver;

/// Whether a native dialog can open, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogSupport {
    Available,
    Unavailable(String),
}

pub fn dialog_support() -> DialogSupport {
    support_from(
        cfg!(target_os = "linux") || cfg!(target_os = "freebsd"),
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()),
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("zenity").is_file())),
    )
}

/// Pure decision: unix desktops need the portal (session bus) or zenity; macOS and Windows always have one.
pub fn support_from(xdg_platform: bool, session_bus: bool, zenity: bool) -> DialogSupport {
    if !xdg_platform || session_bus || zenity {
        DialogSupport::Available
    } else {
        DialogSupport::Unavailable(
            "No file dialog is available here (no desktop portal on the session bus, no zenity). Type the \
             inputs path in the field and press Enter."
                .into(),
        )
    }
}

/// Opens the dialog without blocking the UI (off the main thread except on macOS, where AppKit requires
/// it); the receiver yields the choice once (`None`: cancelled or nothing shown).
pub fn pick_inputs_file(start: Option<&Path>) -> Receiver<Option<PathBuf>> {
    pick_file(
        "Open prepared inputs",
        "safetensors",
        &["safetensors"],
        start,
    )
}

/// [`pick_inputs_file`] for any kind of file: `filter` names the `extensions` offered first.
pub fn pick_file(
    title: &str,
    filter: &str,
    extensions: &[&str],
    start: Option<&Path>,
) -> Receiver<Option<PathBuf>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut dialog = rfd::FileDialog::new()
        .set_title(title)
        .add_filter(filter, extensions)
        .add_filter("all files", &["*"]);
    if let Some(dir) = start.and_then(|p| if p.is_dir() { Some(p) } else { p.parent() }) {
        if dir.is_dir() {
            dialog = dialog.set_directory(dir);
        }
    }
    if cfg!(target_os = "macos") {
        let _ = tx.send(dialog.pick_file());
    } else {
        let spawned = std::thread::Builder::new()
            .name("avflow-file-dialog".into())
            .spawn(move || {
                let _ = tx.send(dialog.pick_file());
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start the file dialog thread: {e}");
        }
    }
    rx
}

/// The save dialog for a figure, proposing `file_name` in `dir`; like [`pick_file`] it does not block
/// the UI, and the receiver yields the chosen path once (`None`: cancelled or nothing shown).
pub fn pick_save_path(
    title: &str,
    file_name: &str,
    dir: Option<&Path>,
) -> Receiver<Option<PathBuf>> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut dialog = rfd::FileDialog::new()
        .set_title(title)
        .set_file_name(file_name);
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        dialog = dialog.set_directory(dir);
    }
    if cfg!(target_os = "macos") {
        let _ = tx.send(dialog.save_file());
    } else {
        let spawned = std::thread::Builder::new()
            .name("avflow-save-dialog".into())
            .spawn(move || {
                let _ = tx.send(dialog.save_file());
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start the save dialog thread: {e}");
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_without_bus_or_zenity_has_no_dialog() {
        assert!(
            matches!(support_from(true, false, false), DialogSupport::Unavailable(m) if m.contains("Type the inputs path"))
        );
        assert_eq!(support_from(true, true, false), DialogSupport::Available);
        assert_eq!(support_from(true, false, true), DialogSupport::Available);
        assert_eq!(support_from(false, false, false), DialogSupport::Available);
    }
}
