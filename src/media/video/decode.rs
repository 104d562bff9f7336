//! FFmpeg (ffmpeg-next) demuxing and decoding: probing, the timestamp index, and decoding only the frames
//! we need, seeking to keyframes when the next wanted frame is past the next keyframe.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{self, Flags};
use ffmpeg::util::frame::Video as AvFrame;
use ffmpeg_next as ffmpeg;

use super::RgbFrame;
use crate::media::{check_decodable, StreamUse};
use crate::{Error, Result};

pub(super) fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Inputs {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(super) struct Opened {
    pub ictx: ffmpeg::format::context::Input,
    pub stream_index: usize,
    pub time_base: f64,
    pub avg_fps: f64,
    pub start_time: i64,
    pub has_audio: bool,
    pub stream_frames: i64,
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
}

pub(super) fn open(path: &Path) -> Result<Opened> {
    open_as(path, StreamUse::Video)
}

/// [`open`] for a stream read as `used_as` (which decides the conversion an unsupported codec's error
/// suggests).
pub(super) fn open_as(path: &Path, used_as: StreamUse) -> Result<Opened> {
    crate::media::ffmpeg_init()
        .map_err(|e| err(path, format!("could not initialise FFmpeg: {e}")))?;
    match std::fs::metadata(path) {
        Err(e) => return Err(err(path, format!("cannot read file: {e}"))),
        Ok(m) if m.len() == 0 => return Err(err(path, "file is empty (0 bytes)")),
        Ok(_) => {}
    }
    let ictx = ffmpeg::format::input(crate::media::ffmpeg_path(path)?).map_err(|e| {
        err(
            path,
            format!("not a readable media file ({e}). Fix: give a video (mp4, mkv, webm, mov…) or an image"),
        )
    })?;
    // A still picture opened as a video (FFmpeg reads PNG, JPEG, … as one-frame streams): say so.
    let format = ictx.format().name().to_string();
    if used_as == StreamUse::Video
        && (format == "image2" || (format.ends_with("_pipe") && format != "gif_pipe"))
    {
        let kind = format.trim_end_matches("_pipe");
        return Err(err(
            path,
            format!(
                "is an image ({kind}), not a video. Fix: pass it with --image (in a manifest: \"image\"), or \
                 make a clip of it (ffmpeg -loop 1 -i IMAGE -t 2 CLIP.mp4)"
            ),
        ));
    }
    let has_audio = ictx.streams().best(ffmpeg::media::Type::Audio).is_some();
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| {
            err(
                path,
                if has_audio {
                    "has no video stream, only sound. Fix: pass it with --audio (in a manifest: \"audio\")"
                } else {
                    "has no video stream"
                },
            )
        })?;
    check_decodable(path, &stream.parameters(), used_as)?;
    let tb = stream.time_base();
    let time_base = f64::from(tb);
    let afr = stream.avg_frame_rate();
    let rfr = stream.rate();
    // PyAV `stream.average_rate` (what torchvision's reader reported as video_fps) is avg_frame_rate.
    let avg_fps = if afr.numerator() > 0 && afr.denominator() > 0 {
        f64::from(afr)
    } else if rfr.numerator() > 0 && rfr.denominator() > 0 {
        f64::from(rfr)
    } else {
        0.0
    };
    let params = stream.parameters();
    let (width, height) = unsafe {
        let p = params.as_ptr();
        ((*p).width.max(0) as u32, (*p).height.max(0) as u32)
    };
    let stream_dur = stream.duration();
    let duration_s = if stream_dur > 0 {
        stream_dur as f64 * time_base
    } else if ictx.duration() > 0 {
        ictx.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE)
    } else {
        0.0
    };
    let start_time = stream.start_time();
    Ok(Opened {
        stream_index: stream.index(),
        time_base,
        avg_fps,
        start_time: if start_time == ffmpeg::ffi::AV_NOPTS_VALUE {
            0
        } else {
            start_time
        },
        has_audio,
        stream_frames: stream.frames(),
        duration_s,
        width,
        height,
        ictx,
    })
}

/// One entry per video packet, in presentation order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub pts: i64,
    pub key: bool,
    /// The packet's duration (0 when the container gives none).
    pub duration: i64,
}

/// Demuxes (no decoding) the video packets: the frame count torchvision's reader got by decoding every
/// frame, and each frame's timestamp. Packets the demuxer marks to be discarded (an MP4 edit list that starts
/// the clip later than its first frame) are not frames of the clip: the decoder drops what they decode to, and
/// the reference's readers never see them. `None` when some packet carries no presentation timestamp (then we
/// decode sequentially): MPEG program streams stamp only some packets, and a decode timestamp in its place
/// is one frame off where frames are reordered, so frames would be looked for at times they do not have.
pub(super) fn index(o: &mut Opened) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut have_ts = true;
    for (stream, packet) in o.ictx.packets() {
        if stream.index() != o.stream_index || discarded(&packet) {
            continue;
        }
        match packet.pts() {
            Some(pts) => entries.push(Entry {
                pts,
                key: packet.is_key(),
                duration: packet.duration(),
            }),
            None => have_ts = false,
        }
    }
    if !have_ts {
        return None;
    }
    entries.sort_by_key(|e| e.pts);
    Some(entries)
}

/// The demuxer marked this packet to be decoded but not shown (`AV_PKT_FLAG_DISCARD`, which ffmpeg-next's
/// `Flags` leaves out).
fn discarded(packet: &ffmpeg::Packet) -> bool {
    use ffmpeg::packet::Ref;
    // SAFETY: the pointer is the live packet's own.
    let flags = unsafe { (*packet.as_ptr()).flags };
    flags & ffmpeg::ffi::AV_PKT_FLAG_DISCARD != 0
}

/// Converts a decoded frame to packed RGB24 (swscale, same size).
struct ToRgb {
    ctx: Option<(scaling::Context, Pixel, u32, u32)>,
}

impl ToRgb {
    fn run(&mut self, f: &AvFrame) -> std::result::Result<RgbFrame, ffmpeg::Error> {
        let (fmt, w, h) = (f.format(), f.width(), f.height());
        let stale =
            !matches!(&self.ctx, Some((_, pf, pw, ph)) if *pf == fmt && *pw == w && *ph == h);
        if stale {
            let c = scaling::Context::get(fmt, w, h, Pixel::RGB24, w, h, Flags::BICUBIC)?;
            self.ctx = Some((c, fmt, w, h));
        }
        let mut out = AvFrame::empty();
        if let Some((c, ..)) = self.ctx.as_mut() {
            c.run(f, &mut out)?;
        }
        let (w, h) = (w as usize, h as usize);
        let stride = out.stride(0);
        let plane = out.data(0);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            data.extend_from_slice(&plane[y * stride..y * stride + w * 3]);
        }
        Ok(RgbFrame {
            width: w,
            height: h,
            data,
        })
    }
}

/// Decodes the frames whose timestamps are in `wanted_pts` (sorted, presentation order) and hands each,
/// as RGB, to `sink(position in wanted_pts, pts, frame)`. Seeks (to the keyframe at or before the wanted
/// frame) whenever that keyframe lies beyond what we have decoded, so a 2-hour clip costs ~nframes GOPs.
pub(super) fn decode_by_pts(
    path: &Path,
    o: &mut Opened,
    entries: &[Entry],
    wanted_pts: &[i64],
    sink: &mut dyn FnMut(usize, i64, RgbFrame) -> Result<()>,
) -> Result<()> {
    let keys: Vec<i64> = entries.iter().filter(|e| e.key).map(|e| e.pts).collect();
    let first_key = keys.first().copied();
    let mut dec = decoder(path, o)?;
    let mut rgb = ToRgb { ctx: None };
    let mut next = 0usize;
    // `o` is freshly opened: the demuxer sits at the first packet.
    let mut last_decoded: Option<i64> = None;
    let mut frame = AvFrame::empty();
    let mut at_eof = false;
    'outer: while next < wanted_pts.len() {
        let target = wanted_pts[next];
        if let Some(k) = keys.iter().rev().find(|&&k| k <= target).copied() {
            let must_seek = match last_decoded {
                None => Some(k) > first_key && !at_eof,
                Some(l) => l < k,
            };
            if must_seek {
                seek(o, k);
                dec.flush();
                at_eof = false;
            }
        }
        // Decode until a frame with pts >= target comes out.
        loop {
            while dec.receive_frame(&mut frame).is_ok() {
                let pts = frame.timestamp().or(frame.pts()).unwrap_or(i64::MIN);
                last_decoded = Some(pts);
                while next < wanted_pts.len() && wanted_pts[next] < pts {
                    // The wanted pts never came out of the decoder (corrupt packet): use this frame.
                    let rgbf = rgb
                        .run(&frame)
                        .map_err(|e| err(path, format!("pixel conversion failed: {e}")))?;
                    sink(next, pts, rgbf)?;
                    next += 1;
                }
                if next < wanted_pts.len() && wanted_pts[next] == pts {
                    let rgbf = rgb
                        .run(&frame)
                        .map_err(|e| err(path, format!("pixel conversion failed: {e}")))?;
                    // The same frame may be wanted twice (linspace rounding on very short clips).
                    while next < wanted_pts.len() && wanted_pts[next] == pts {
                        sink(next, pts, rgbf.clone())?;
                        next += 1;
                    }
                }
                if next >= wanted_pts.len() {
                    break 'outer;
                }
                if wanted_pts[next] != target {
                    continue 'outer; // re-decide whether to seek for the next target
                }
            }
            if at_eof {
                break 'outer;
            }
            match read_video_packet(o) {
                Some(p) => {
                    // A corrupt packet is skipped, as FFmpeg-based readers do.
                    let _ = dec.send_packet(&p);
                }
                None => {
                    let _ = dec.send_eof();
                    at_eof = true;
                }
            }
        }
    }
    if next < wanted_pts.len() {
        return Err(err(
            path,
            format!(
                "decoded only {next} of {} sampled frames; the file is truncated or corrupt",
                wanted_pts.len()
            ),
        ));
    }
    Ok(())
}

/// Sequential fallback for streams without timestamps: decodes every frame, numbering them, and hands the
/// wanted ones (sorted indices) to `sink`. Returns the number of decoded frames.
pub(super) fn decode_sequential(
    path: &Path,
    o: &mut Opened,
    wanted: Option<&[usize]>,
    sink: &mut dyn FnMut(usize, i64, RgbFrame) -> Result<()>,
) -> Result<usize> {
    let mut dec = decoder(path, o)?;
    let mut rgb = ToRgb { ctx: None };
    let mut n = 0usize;
    let mut next = 0usize;
    let mut frame = AvFrame::empty();
    let mut eof = false;
    loop {
        while dec.receive_frame(&mut frame).is_ok() {
            if let Some(w) = wanted {
                while next < w.len() && w[next] == n {
                    let pts = frame.timestamp().or(frame.pts()).unwrap_or(0);
                    let f = rgb
                        .run(&frame)
                        .map_err(|e| err(path, format!("pixel conversion failed: {e}")))?;
                    sink(next, pts, f)?;
                    next += 1;
                }
            }
            n += 1;
        }
        if eof {
            break;
        }
        match read_video_packet(o) {
            Some(p) => {
                let _ = dec.send_packet(&p);
            }
            None => {
                let _ = dec.send_eof();
                eof = true;
            }
        }
    }
    Ok(n)
}

fn decoder(path: &Path, o: &Opened) -> Result<ffmpeg::decoder::Video> {
    let stream = o
        .ictx
        .stream(o.stream_index)
        .ok_or_else(|| err(path, "video stream vanished"))?;
    let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| err(path, format!("unsupported video codec: {e}")))?;
    // Frame threading delays output but not its content; let FFmpeg pick the count.
    ctx.set_threading(ffmpeg::threading::Config::kind(
        ffmpeg::threading::Type::Frame,
    ));
    ctx.decoder().video().map_err(|e| {
        err(
            path,
            format!("cannot open a decoder for the video stream: {e}"),
        )
    })
}

fn read_video_packet(o: &mut Opened) -> Option<ffmpeg::Packet> {
    for (stream, packet) in o.ictx.packets() {
        if stream.index() == o.stream_index {
            return Some(packet);
        }
    }
    None
}

/// Seeks the video stream to the keyframe at or before `pts` (stream time base). On failure (a demuxer
/// that cannot seek) we stay where we are and decode forward, which is slower but still exact.
fn seek(o: &mut Opened, pts: i64) {
    // av_seek_frame on the stream itself: exact stream-time-base timestamps, no AV_TIME_BASE rounding.
    unsafe {
        ffmpeg::ffi::av_seek_frame(
            o.ictx.as_mut_ptr(),
            o.stream_index as i32,
            pts,
            ffmpeg::ffi::AVSEEK_FLAG_BACKWARD,
        );
    }
}

/// Decodes the first frame of an image file (PNG, JPEG… through FFmpeg's image demuxers) to RGB.
pub(super) fn decode_first(path: &Path) -> Result<RgbFrame> {
    let mut o = open_as(path, StreamUse::Image)?;
    let mut dec = decoder(path, &o)?;
    let mut rgb = ToRgb { ctx: None };
    let mut frame = AvFrame::empty();
    let mut eof = false;
    loop {
        if dec.receive_frame(&mut frame).is_ok() {
            return rgb
                .run(&frame)
                .map_err(|e| err(path, format!("pixel conversion failed: {e}")));
        }
        if eof {
            return Err(err(path, "no decodable picture (truncated or corrupt?)"));
        }
        match read_video_packet(&mut o) {
            Some(p) => {
                let _ = dec.send_packet(&p);
            }
            None => {
                let _ = dec.send_eof();
                eof = true;
            }
        }
    }
}
