//! File → mono f32 samples at the file's own rate: symphonia first (wav, flac, ogg/vorbis, mkv/webm with
//! pcm/flac/vorbis…), ffmpeg (libav*) for anything symphonia cannot open or decode (the AAC/Opus track
//! of an mp4/mkv/webm, mp3, …).

use std::fs::File;
use std::path::Path;
use std::sync::Once;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::{err, no_audio_error, Decoded};
use crate::error::Result;

/// What symphonia made of a file.
enum Sym {
    Decoded(Decoded),
    /// Not a format, or not a codec, symphonia knows; or no audio track it can see: ask ffmpeg.
    Unsupported(String),
    /// A format symphonia knows, but broken: final.
    Broken(String),
}

/// Runs a symphonia call, turning a panic inside it (its parsers do arithmetic on a file's fields that a
/// corrupt file overflows) into `None`, without the panic message reaching the user: FFmpeg gets the file
/// next, and whatever fails is avflow's error to report.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    out.ok()
}

pub(super) fn decode(path: &Path) -> Result<Decoded> {
    check_file(path)?;
    let sym = guarded(|| symphonia_decode(path))
        .unwrap_or_else(|| Sym::Unsupported("its parser failed on this file".into()));
    let sym_reason = match sym {
        Sym::Decoded(d) => return finish(path, d),
        Sym::Broken(reason) => return Err(err(path, reason)),
        Sym::Unsupported(reason) => reason,
    };
    match ffmpeg_decode(path, &sym_reason)? {
        Some(d) => finish(path, d),
        None => Err(no_audio_error(path)),
    }
}

/// Whether the file has an audio stream (without decoding it). Errors as `decode` for files that are
/// missing, empty or not media at all.
pub(super) fn has_audio(path: &Path) -> Result<bool> {
    check_file(path)?;
    let probed = guarded(|| {
        symphonia_probe(path).is_ok_and(|f| f.default_track(TrackType::Audio).is_some())
    });
    if probed == Some(true) {
        return Ok(true);
    }
    ffmpeg_init();
    match ffmpeg_next::format::input(crate::media::ffmpeg_path(path)?) {
        Ok(ictx) => Ok(ictx
            .streams()
            .best(ffmpeg_next::media::Type::Audio)
            .is_some()),
        Err(e) => Err(not_media(path, "", &e.to_string())),
    }
}

fn check_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| {
        err(
            path,
            format!("cannot read the file ({e}); check the path and its permissions"),
        )
    })?;
    if meta.is_dir() {
        return Err(err(
            path,
            "is a folder, not an audio or video file; pass a file",
        ));
    }
    if meta.len() == 0 {
        return Err(err(
            path,
            "the file is empty (0 bytes), so there is no audio to read; re-export or re-copy it",
        ));
    }
    File::open(path).map_err(|e| {
        err(
            path,
            format!("cannot open the file ({e}); check its permissions"),
        )
    })?;
    Ok(())
}

fn finish(path: &Path, d: Decoded) -> Result<Decoded> {
    if d.sample_rate == 0 {
        return Err(err(
            path,
            "the audio stream reports a sample rate of 0 Hz; the file is corrupt, re-export it",
        ));
    }
    if d.samples.is_empty() {
        return Err(err(
            path,
            "zero-length audio: the file holds an audio stream with no samples; pass a clip with sound in it",
        ));
    }
    Ok(d)
}

fn not_media(path: &Path, sym_reason: &str, ff_reason: &str) -> crate::error::Error {
    let sym = if sym_reason.is_empty() {
        String::new()
    } else {
        format!("symphonia: {sym_reason}; ")
    };
    err(
        path,
        format!(
            "not a recognised audio or video file ({sym}ffmpeg: {ff_reason}); pass a wav/flac/ogg/mp3 file or a \
             video with an audio track, or convert it, e.g. `ffmpeg -i <file> out.wav`"
        ),
    )
}

fn symphonia_probe(
    path: &Path,
) -> std::result::Result<Box<dyn symphonia::core::formats::FormatReader>, SymError> {
    let file = File::open(path).map_err(SymError::IoError)?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    symphonia::default::get_probe().probe(
        &hint,
        mss,
        FormatOptions::default(),
        MetadataOptions::default(),
    )
}

fn symphonia_decode(path: &Path) -> Sym {
    let mut format = match symphonia_probe(path) {
        Ok(f) => f,
        Err(e) => return Sym::Unsupported(e.to_string()),
    };
    let Some(track) = format.default_track(TrackType::Audio) else {
        return Sym::Unsupported("no audio track".into());
    };
    let track_id = track.id;
    let declared_frames = track.num_frames;
    let Some(params) = track.codec_params.as_ref().and_then(|p| p.audio()) else {
        return Sym::Unsupported("no audio codec parameters".into());
    };
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels_in = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let mut decoder = match symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
    {
        Ok(d) => d,
        Err(e) => return Sym::Unsupported(e.to_string()),
    };

    let mut samples: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    let mut ended_early: Option<String> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::ResetRequired) => break, // chained ogg: we read the first stream
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ended_early = Some(e.to_string());
                break;
            }
            Err(e) => {
                return Sym::Broken(format!(
                    "corrupt or truncated audio ({e}) after {} samples; re-export or re-download the file",
                    samples.len()
                ))
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(e) => {
                return Sym::Broken(format!(
                    "corrupt audio data ({e}) after {} samples; re-export or re-download the file",
                    samples.len()
                ))
            }
        };
        let ch = buf.spec().channels().count().max(1);
        sample_rate = buf.spec().rate();
        channels_in = ch;
        let frames = buf.frames();
        if frames == 0 {
            continue;
        }
        interleaved.resize(frames * ch, 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved[..]);
        downmix_interleaved(&interleaved, ch, &mut samples);
    }
    if let Some(n) = declared_frames {
        if (samples.len() as u64) < n {
            return Sym::Broken(format!(
                "truncated: the header declares {n} samples per channel but the file holds only {}; \
                 re-export or re-download the file",
                samples.len()
            ));
        }
    }
    if let Some(e) = ended_early {
        return Sym::Broken(format!(
            "truncated: the file ends in the middle of the audio data ({e}) after {} samples; re-export or \
             re-download the file",
            samples.len()
        ));
    }
    let seconds = if sample_rate > 0 {
        samples.len() as f64 / sample_rate as f64
    } else {
        0.0
    };
    Sym::Decoded(Decoded {
        samples,
        sample_rate,
        channels_in,
        seconds,
    })
}

/// Average the channels (librosa `to_mono`: numpy mean over channels in f32, summed in channel order).
fn downmix_interleaved(x: &[f32], ch: usize, out: &mut Vec<f32>) {
    if ch == 1 {
        out.extend_from_slice(x);
        return;
    }
    let inv = ch as f32;
    out.extend(x.chunks_exact(ch).map(|f| {
        let mut s = f[0];
        for &v in &f[1..] {
            s += v;
        }
        s / inv
    }));
}

fn ffmpeg_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = crate::media::ffmpeg_init();
    });
}

/// An FFmpeg failure on `path`'s audio, with the fix.
fn ffmpeg_broken(path: &Path, what: &str, e: &dyn std::fmt::Display) -> crate::error::Error {
    err(path, format!("{what} ({e}); re-export the file or convert its audio, e.g. `ffmpeg -i <file> out.wav`"))
}

/// Opens `path`'s best audio stream through FFmpeg, checked as decodable: the container, the stream's
/// index and its decoder; `Ok(None)` for a media file without an audio stream. `sym_reason` is what
/// symphonia said of the file, for the error when FFmpeg cannot read it either.
fn ffmpeg_open_audio(
    path: &Path,
    sym_reason: &str,
) -> Result<
    Option<(
        ffmpeg_next::format::context::Input,
        usize,
        ffmpeg_next::decoder::Audio,
    )>,
> {
    ffmpeg_init();
    let ictx = ffmpeg_next::format::input(crate::media::ffmpeg_path(path)?)
        .map_err(|e| not_media(path, sym_reason, &e.to_string()))?;
    let Some(stream) = ictx.streams().best(ffmpeg_next::media::Type::Audio) else {
        return Ok(None);
    };
    let used_as = match ictx.streams().best(ffmpeg_next::media::Type::Video) {
        Some(_) => crate::media::StreamUse::AudioOfVideo,
        None => crate::media::StreamUse::Audio,
    };
    crate::media::check_decodable(path, &stream.parameters(), used_as)?;
    let index = stream.index();
    let broken = |what: &str, e: &dyn std::fmt::Display| ffmpeg_broken(path, what, e);
    let ctx = ffmpeg_next::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| broken("cannot read the audio stream's parameters", &e))?;
    let decoder = ctx
        .decoder()
        .audio()
        .map_err(|e| broken("no decoder for the audio stream's codec", &e))?;
    Ok(Some((ictx, index, decoder)))
}

/// `Ok(None)`: a media file without an audio stream.
fn ffmpeg_decode(path: &Path, sym_reason: &str) -> Result<Option<Decoded>> {
    use ffmpeg_next::format::sample::Type as SType;
    use ffmpeg_next::format::Sample;

    let Some((mut ictx, index, mut decoder)) = ffmpeg_open_audio(path, sym_reason)? else {
        return Ok(None);
    };
    let broken = |what: &str, e: &dyn std::fmt::Display| ffmpeg_broken(path, what, e);

    let mut out = Decoded {
        samples: Vec::new(),
        sample_rate: 0,
        channels_in: 0,
        seconds: 0.0,
    };
    let mut frame = ffmpeg_next::frame::Audio::empty();
    let mut bad_packets = 0usize;
    let mut drain = |decoder: &mut ffmpeg_next::decoder::Audio, out: &mut Decoded| -> Result<()> {
        while decoder.receive_frame(&mut frame).is_ok() {
            let ch = frame.channels().max(1) as usize;
            let n = frame.samples();
            out.sample_rate = frame.rate();
            out.channels_in = ch;
            let fmt = frame.format();
            let (planar, bytes) = match fmt {
                Sample::U8(t) => (t == SType::Planar, 1),
                Sample::I16(t) => (t == SType::Planar, 2),
                Sample::I32(t) | Sample::F32(t) => (t == SType::Planar, 4),
                Sample::I64(t) | Sample::F64(t) => (t == SType::Planar, 8),
                Sample::None => {
                    return Err(err(
                        path,
                        "the audio decoder returned frames without a sample format",
                    ))
                }
            };
            let read = |b: &[u8]| -> f32 {
                match fmt {
                    Sample::U8(_) => (b[0] as f32 - 128.0) / 128.0,
                    Sample::I16(_) => i16::from_ne_bytes([b[0], b[1]]) as f32 / 32768.0,
                    Sample::I32(_) => {
                        i32::from_ne_bytes(b[..4].try_into().unwrap()) as f32 / 2_147_483_648.0
                    }
                    Sample::F32(_) => f32::from_ne_bytes(b[..4].try_into().unwrap()),
                    Sample::I64(_) => {
                        (i64::from_ne_bytes(b[..8].try_into().unwrap()) as f64
                            / 9.223_372_036_854_776e18) as f32
                    }
                    Sample::F64(_) => f64::from_ne_bytes(b[..8].try_into().unwrap()) as f32,
                    Sample::None => 0.0,
                }
            };
            let start = out.samples.len();
            out.samples.resize(start + n, 0.0);
            let dst = &mut out.samples[start..];
            for c in 0..ch {
                let (plane, stride, offset) = if planar {
                    (frame.data(c), bytes, 0)
                } else {
                    (frame.data(0), bytes * ch, bytes * c)
                };
                if plane.len() < offset + (n.max(1) - 1) * stride + bytes {
                    return Err(err(
                        path,
                        "the audio decoder returned a frame shorter than it claims",
                    ));
                }
                for (i, d) in dst.iter_mut().enumerate() {
                    let p = offset + i * stride;
                    *d += read(&plane[p..p + bytes]);
                }
            }
            if ch > 1 {
                let inv = ch as f32;
                dst.iter_mut().for_each(|d| *d /= inv);
            }
        }
        Ok(())
    };
    let mut packet = ffmpeg_next::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg_next::Error::Eof) => break,
            Err(ffmpeg_next::Error::InvalidData) => {
                bad_packets += 1;
                continue;
            }
            Err(e) => return Err(broken("reading the file failed", &e)),
        }
        if packet.stream() != index {
            continue;
        }
        if decoder.send_packet(&packet).is_err() {
            bad_packets += 1;
        }
        drain(&mut decoder, &mut out)?;
    }
    let _ = decoder.send_eof();
    drain(&mut decoder, &mut out)?;
    if out.samples.is_empty() && bad_packets > 0 {
        return Err(err(
            path,
            format!("corrupt audio: {bad_packets} packets could not be decoded and none could; re-export the file"),
        ));
    }
    if out.sample_rate == 0 {
        out.sample_rate = decoder.rate();
        out.channels_in = decoder.channels() as usize;
    }
    out.seconds = if out.sample_rate > 0 {
        out.samples.len() as f64 / out.sample_rate as f64
    } else {
        0.0
    };
    Ok(Some(out))
}

/// The audio stream through FFmpeg alone, converted by its resampler (swresample, default options) to mono
/// float at `rate`: what torchcodec's `AudioDecoder(sample_rate=rate, num_channels=1)` returns, and so what
/// video-SALMONN 2+'s dataset code hears. `no audio stream` (see [`super::is_no_audio`]) for a silent video.
pub(super) fn ffmpeg_resampled(path: &Path, rate: u32) -> Result<Vec<f32>> {
    use ffmpeg_next::format::sample::Type as SType;
    use ffmpeg_next::format::Sample;
    use ffmpeg_next::software::resampling;
    use ffmpeg_next::ChannelLayout;

    check_file(path)?;
    let (mut ictx, index, mut decoder) =
        ffmpeg_open_audio(path, "")?.ok_or_else(|| no_audio_error(path))?;
    let broken = |what: &str, e: &dyn std::fmt::Display| ffmpeg_broken(path, what, e);
    let out_fmt = Sample::F32(SType::Packed);
    let mut swr: Option<resampling::Context> = None;
    let mut out = Vec::new();
    let mut frame = ffmpeg_next::frame::Audio::empty();
    let take = |f: &ffmpeg_next::frame::Audio, out: &mut Vec<f32>| {
        let n = f.samples();
        if n > 0 {
            let bytes = &f.data(0)[..n * 4];
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
    };
    let mut drain = |decoder: &mut ffmpeg_next::decoder::Audio,
                     swr: &mut Option<resampling::Context>,
                     out: &mut Vec<f32>|
     -> Result<()> {
        while decoder.receive_frame(&mut frame).is_ok() {
            if frame.channel_layout().is_empty() {
                frame.set_channel_layout(ChannelLayout::default(frame.channels() as i32));
            }
            let c = match swr {
                Some(c) => c,
                None => swr.insert(
                    resampling::Context::get(
                        frame.format(),
                        frame.channel_layout(),
                        frame.rate(),
                        out_fmt,
                        ChannelLayout::MONO,
                        rate,
                    )
                    .map_err(|e| broken("FFmpeg cannot resample the audio", &e))?,
                ),
            };
            let room =
                (frame.samples() as u64 * rate as u64 / frame.rate().max(1) as u64) as usize + 64;
            let mut o = ffmpeg_next::frame::Audio::new(out_fmt, room, ChannelLayout::MONO);
            c.run(&frame, &mut o)
                .map_err(|e| broken("FFmpeg's resampler failed", &e))?;
            take(&o, out);
        }
        Ok(())
    };
    let mut packet = ffmpeg_next::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg_next::Error::Eof) => break,
            Err(ffmpeg_next::Error::InvalidData) => continue,
            Err(e) => return Err(broken("reading the file failed", &e)),
        }
        if packet.stream() != index {
            continue;
        }
        let _ = decoder.send_packet(&packet);
        drain(&mut decoder, &mut swr, &mut out)?;
    }
    let _ = decoder.send_eof();
    drain(&mut decoder, &mut swr, &mut out)?;
    if let Some(c) = swr.as_mut() {
        // What the resampler still holds (its filter delay).
        loop {
            let mut o = ffmpeg_next::frame::Audio::new(out_fmt, 4096, ChannelLayout::MONO);
            c.flush(&mut o)
                .map_err(|e| broken("FFmpeg's resampler failed", &e))?;
            if o.samples() == 0 {
                break;
            }
            take(&o, &mut out);
        }
    }
    Ok(out)
}
