//! Media → model inputs, the parts every family's processor shares: decoding, sampling, resampling,
//! log-mel, resizing and patchifying exactly as the reference processors (transformers + qwen-omni-utils)
//! do; the chat template and tokenizer; and the app's timeline of a prepared prompt.

pub mod audio;
pub mod cache;
pub mod prepare;
pub mod preview;
pub mod tokenizer;
pub mod video;

/// FFmpeg's Rust bindings take paths as UTF-8 and panic on anything else: such paths are refused here
/// with an error that names the file and the fix (symphonia, for audio files, reads them fine).
pub(crate) fn ffmpeg_path(path: &std::path::Path) -> crate::Result<&str> {
    path.to_str().ok_or_else(|| crate::Error::Inputs {
        path: path.to_path_buf(),
        reason: "the path is not valid UTF-8, which FFmpeg cannot open. Fix: rename the file (or link it under a UTF-8 name)".into(),
    })
}

/// Starts FFmpeg once with its own log off: its lines ("analyzeduration", "Invalid data found", a decoder's
/// complaints about a broken packet) would reach the user even where avflow recovers, and where it does not,
/// avflow's own error names the file and the fix. `AVFLOW_FFMPEG_LOG=1` keeps FFmpeg's log (warnings).
pub(crate) fn ffmpeg_init() -> Result<(), ffmpeg_next::Error> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    ffmpeg_next::init()?;
    QUIET.call_once(|| {
        use ffmpeg_next::util::log::{set_level, Level};
        let keep = std::env::var_os("AVFLOW_FFMPEG_LOG").is_some_and(|v| !v.is_empty() && v != "0");
        set_level(if keep { Level::Warning } else { Level::Quiet });
    });
    Ok(())
}

/// What a stream is read for: it decides the conversion an unsupported-codec error suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamUse {
    Video,
    Image,
    Audio,
    /// The sound track of a file that also has pictures.
    AudioOfVideo,
}

/// FFmpeg demuxes streams it cannot decode (an unknown FourCC or format tag maps to no codec; a build may
/// lack a decoder) and only says "Decoder not found" once decoding starts. Checked when the stream is
/// opened instead, so the error names the file, the codec and a conversion that gets around it.
pub(crate) fn check_decodable(
    path: &std::path::Path,
    params: &ffmpeg_next::codec::Parameters,
    used_as: StreamUse,
) -> crate::Result<()> {
    let id = params.id();
    if id != ffmpeg_next::codec::Id::None && ffmpeg_next::decoder::find(id).is_some() {
        return Ok(());
    }
    // SAFETY: `params` wraps a live AVCodecParameters owned by the open input context.
    let tag = unsafe { (*params.as_ptr()).codec_tag };
    let codec = if id == ffmpeg_next::codec::Id::None {
        format!("(unknown to FFmpeg, tag {})", codec_tag(tag))
    } else {
        format!("{} (tag {})", id.name(), codec_tag(tag))
    };
    let input = shell_word(&path.display().to_string());
    let converted = |ext: &str| {
        let stem = path
            .file_stem()
            .map_or("out".into(), |s| s.to_string_lossy());
        shell_word(
            &path
                .with_file_name(format!("{stem}-converted.{ext}"))
                .display()
                .to_string(),
        )
    };
    let (what, fix) = match used_as {
        StreamUse::Video => (
            "video",
            format!(
                "re-encode it with a tool that plays this codec, e.g. an FFmpeg build with its decoder: \
                 `ffmpeg -i {input} -c:v libx264 -pix_fmt yuv420p -c:a aac {}`, then pass that file",
                converted("mp4")
            ),
        ),
        StreamUse::Image => (
            "image",
            format!(
                "convert it to PNG or JPEG with a tool that reads this format, e.g. `ffmpeg -i {input} {}`",
                converted("png")
            ),
        ),
        StreamUse::Audio => (
            "audio",
            format!(
                "convert it with a tool that plays this codec, e.g. an FFmpeg build with its decoder: \
                 `ffmpeg -i {input} -c:a pcm_s16le {}`",
                converted("wav")
            ),
        ),
        StreamUse::AudioOfVideo => (
            "audio",
            format!(
                "pass --no-audio-in-video to use its pictures only, or re-encode its sound with a tool that \
                 plays this codec, e.g. an FFmpeg build with its decoder: `ffmpeg -i {input} -c:v copy -c:a flac {}`",
                converted("mkv")
            ),
        ),
    };
    Err(crate::Error::Inputs {
        path: path.to_path_buf(),
        reason: format!(
            "unsupported {what} codec {codec}: FFmpeg, which avflow decodes with, has no decoder for it. Fix: {fix}"
        ),
    })
}

/// A container's codec tag as its FourCC when printable (`'QQV1'`), else in hex (WAV format tags).
fn codec_tag(tag: u32) -> String {
    let b = tag.to_le_bytes();
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("'{}'", String::from_utf8_lossy(&b))
    } else {
        format!("{tag:#06x}")
    }
}

/// Quotes a path for a POSIX shell when it needs it, so a suggested command can be pasted as is.
fn shell_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_tags_and_shell_words() {
        assert_eq!(codec_tag(u32::from_le_bytes(*b"QQV1")), "'QQV1'");
        assert_eq!(codec_tag(0x4f51), "0x4f51");
        assert_eq!(shell_word("/a/clip-1.avi"), "/a/clip-1.avi");
        assert_eq!(shell_word("my clip's.avi"), r"'my clip'\''s.avi'");
    }
}
