//! The one palette of avflow: every figure and the app colour a token group the same way, so a reader
//! who learned "orange is audio" in the app reads a paper figure without its legend.
//!
//! Okabe & Ito's eight colours ("Color Universal Design", 2008) stay distinguishable for the common forms
//! of colour blindness; dark grey marks the system prompt, which is context rather than a signal.
//! Plain sRGB `u8` triples: no dependency on egui or plotters, so both sides convert from here.

/// An sRGB colour.
pub type Rgb = [u8; 3];

/// Okabe–Ito colours.
pub const BLACK: Rgb = [0, 0, 0];
pub const ORANGE: Rgb = [230, 159, 0];
pub const SKY_BLUE: Rgb = [86, 180, 233];
pub const BLUISH_GREEN: Rgb = [0, 158, 115];
pub const YELLOW: Rgb = [240, 228, 66];
pub const BLUE: Rgb = [0, 114, 178];
pub const VERMILLION: Rgb = [213, 94, 0];
pub const REDDISH_PURPLE: Rgb = [204, 121, 167];
/// Not Okabe–Ito: the neutral of reference lines.
pub const GREY: Rgb = [153, 153, 153];
/// Not Okabe–Ito: the system prompt, context rather than signal. Darker than `GREY`, which reddish
/// purple (video) comes too close to.
pub const DARK_GREY: Rgb = [102, 102, 102];

/// One fixed colour per token group.
pub const AUDIO: Rgb = ORANGE;
pub const VIDEO: Rgb = REDDISH_PURPLE;
pub const IMAGE: Rgb = BLUISH_GREEN;
/// The question (in the app: the user's text, of which the question is the part that matters).
pub const QUESTION: Rgb = BLUE;
/// The last prompt position, the one that produces the answer.
pub const LAST: Rgb = VERMILLION;
pub const SYSTEM: Rgb = DARK_GREY;
/// App only: `<|audio_bos|>`-style brackets around media.
pub const MARKER: Rgb = YELLOW;
/// Figures: positions in no group (chat-template tokens, media brackets) on a heatmap's token axis.
pub const OTHER: Rgb = [215, 215, 215];

/// The groups with a fixed colour, in legend order.
pub const GROUPS: [(&str, Rgb); 6] = [
    ("audio", AUDIO),
    ("video", VIDEO),
    ("image", IMAGE),
    ("question", QUESTION),
    ("last", LAST),
    ("system", SYSTEM),
];

/// Colours for keys that are no group (custom spans, several selectors, a top-1 curve): the Okabe–Ito
/// colours the groups leave free first; past three such keys colours repeat a group's.
pub const CYCLE: [Rgb; 8] = [
    SKY_BLUE,
    BLACK,
    YELLOW,
    BLUE,
    ORANGE,
    BLUISH_GREEN,
    REDDISH_PURPLE,
    VERMILLION,
];

/// The fixed colour of a group name (`audio`, …, and `other`), `None` for anything else.
pub fn group_rgb(name: &str) -> Option<Rgb> {
    if name == "other" {
        return Some(OTHER);
    }
    GROUPS.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

/// A group's colour, or the `index`-th free colour for other keys (`audio,video`, `item:1`, …).
pub fn key_rgb(key: &str, index: usize) -> Rgb {
    group_rgb(key).unwrap_or(CYCLE[index % CYCLE.len()])
}

/// Colours for a list of keys: groups keep theirs; the other keys, in order of first appearance, take
/// the free colours (the same key always the same colour).
pub fn assign(keys: &[&str]) -> Vec<Rgb> {
    let mut others: Vec<&str> = Vec::new();
    keys.iter()
        .map(|&k| {
            group_rgb(k).unwrap_or_else(|| {
                let i = others.iter().position(|&o| o == k).unwrap_or_else(|| {
                    others.push(k);
                    others.len() - 1
                });
                CYCLE[i % CYCLE.len()]
            })
        })
        .collect()
}

/// `#rrggbb`, for SVG and CSS.
pub fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_group_has_its_own_colour() {
        for (i, (a, ca)) in GROUPS.iter().enumerate() {
            for (b, cb) in &GROUPS[i + 1..] {
                assert_ne!(ca, cb, "{a} and {b} share a colour");
                // Far apart, not just different: at least 60 in one channel.
                let d = (0..3)
                    .map(|k| (ca[k] as i32 - cb[k] as i32).abs())
                    .max()
                    .unwrap();
                assert!(d >= 60, "{a} and {b} are too close ({d})");
            }
        }
        assert_eq!(group_rgb("audio"), Some([230, 159, 0]));
        assert_eq!(group_rgb("nope"), None);
        assert_eq!(key_rgb("video", 3), VIDEO);
        assert_ne!(key_rgb("item:1", 0), key_rgb("item:2", 1));
        assert_eq!(hex(VERMILLION), "#d55e00");
        let c = assign(&["audio", "span-a", "question", "span-b", "span-a"]);
        assert_eq!(c, vec![AUDIO, SKY_BLUE, QUESTION, BLACK, SKY_BLUE]);
        // The free colours are no group's.
        for free in &CYCLE[..3] {
            assert!(GROUPS.iter().all(|(_, g)| g != free));
        }
    }
}
