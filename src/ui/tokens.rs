//! The token strip's presentation groups (system text, user text, audio, …), read off the library's one
//! classification of a prompt ([`crate::prompt::TokenMap`]): the app never classifies positions itself.
//!
//! Pure functions only.

use crate::prompt::TokenInfo;

/// What a prompt position is, for colouring and for the legend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// The system turn (everything before the first user turn).
    System,
    /// Ordinary text of the user / assistant turns, chat-template tokens included.
    Text,
    /// An audio placeholder (replaced by an audio-tower output row).
    Audio,
    /// An image placeholder (replaced by a vision-tower output row).
    Image,
    /// A video placeholder (replaced by a vision-tower output row).
    Video,
    /// `<|audio_bos|>`, `<|audio_eos|>`, `<|vision_bos|>`, `<|vision_eos|>`: brackets around media.
    Marker,
}

impl Group {
    /// Every group, in legend order.
    pub const ALL: [Group; 6] = [
        Group::System,
        Group::Text,
        Group::Audio,
        Group::Video,
        Group::Image,
        Group::Marker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::System => "system",
            Group::Text => "text",
            Group::Audio => "audio",
            Group::Image => "image",
            Group::Video => "video",
            Group::Marker => "media marker",
        }
    }

    /// Cell colour (sRGB) from the one palette the exported figures use too (`export::palette`,
    /// Okabe–Ito), so a group looks the same in the app and in a paper. User text takes the question's.
    pub fn rgb(self) -> [u8; 3] {
        use crate::export::palette;
        match self {
            Group::System => palette::SYSTEM,
            Group::Text => palette::QUESTION,
            Group::Audio => palette::AUDIO,
            Group::Image => palette::IMAGE,
            Group::Video => palette::VIDEO,
            Group::Marker => palette::MARKER,
        }
    }

    /// How the strip shows a position of the token map: the media placeholders as their modality, the
    /// brackets around media as markers, the system turn as system, and every other position (question,
    /// `last`, chat-template tokens) as text.
    pub fn of(t: &TokenInfo) -> Group {
        match t.group.as_str() {
            "audio" => Group::Audio,
            "video" => Group::Video,
            "image" => Group::Image,
            _ if t.marker => Group::Marker,
            "system" => Group::System,
            _ => Group::Text,
        }
    }
}

/// Number of positions per group, in legend order, groups with no position left out.
pub fn group_counts(groups: &[Group]) -> Vec<(Group, usize)> {
    Group::ALL
        .iter()
        .map(|&g| (g, groups.iter().filter(|&&x| x == g).count()))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Token text quoted and escaped (`"\n"`, `" the"`), so whitespace and control characters are visible and
/// the default font (Latin only) has a glyph for every character it draws.
pub fn quoted(text: &str) -> String {
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{SpecialTokens, TokenMap};

    const IM_START: u32 = 151644;
    const IM_END: u32 = 151645;
    const USER: u32 = 872;
    const AUDIO: u32 = 151646;
    const IMAGE: u32 = 151655;
    const VIDEO: u32 = 151656;
    const AUDIO_START: u32 = 151647;
    const AUDIO_END: u32 = 151648;
    const VISION_START: u32 = 151652;
    const VISION_END: u32 = 151653;

    fn special() -> SpecialTokens {
        SpecialTokens {
            audio: Some(AUDIO),
            image: Some(IMAGE),
            video: Some(VIDEO),
            markers: vec![AUDIO_START, AUDIO_END, VISION_START, VISION_END],
            im_start: Some(IM_START),
            im_end: Some(IM_END),
            user: Some(USER),
            stop: vec![IM_END],
        }
    }

    /// `<|im_start|>system\nX<|im_end|>\n<|im_start|>user\n<vision_bos><video><video><vision_eos>
    /// <audio_bos><audio><audio_eos>hi<|im_end|>`
    fn prompt() -> Vec<u32> {
        vec![
            IM_START,
            8948,
            198,
            55,
            IM_END,
            198, // system turn: 0..6
            IM_START,
            USER,
            198, // 6..9
            VISION_START,
            VIDEO,
            VIDEO,
            VISION_END, // 9..13
            AUDIO_START,
            AUDIO,
            AUDIO_END, // 13..16
            6023,
            IM_END, // 16..18
        ]
    }

    fn groups(ids: &[u32]) -> Vec<Group> {
        TokenMap::classify(ids, &special())
            .tokens
            .iter()
            .map(Group::of)
            .collect()
    }

    #[test]
    fn the_token_map_shows_as_system_media_markers_and_text() {
        use Group::*;
        assert_eq!(
            groups(&prompt()),
            vec![
                System, System, System, System, System, System, Text, Text, Text, Marker, Video,
                Video, Marker, Marker, Audio, Marker, Text, Text
            ]
        );
        // A prompt that opens with the user turn has no system part.
        assert!(!groups(&prompt()[6..]).contains(&System));
        assert!(groups(&[]).is_empty());
    }

    #[test]
    fn each_map_group_has_its_presentation() {
        let info = |group: &str, marker: bool| TokenInfo {
            position: 0,
            id: 0,
            group: group.into(),
            item: None,
            time: None,
            grid: None,
            chunk: None,
            marker,
            text: String::new(),
        };
        assert_eq!(Group::of(&info("image", false)), Group::Image);
        assert_eq!(Group::of(&info("video", false)), Group::Video);
        assert_eq!(Group::of(&info("audio", false)), Group::Audio);
        assert_eq!(Group::of(&info("template", true)), Group::Marker);
        assert_eq!(Group::of(&info("system", false)), Group::System);
        for text in ["question", "last", "template", "mine"] {
            assert_eq!(Group::of(&info(text, false)), Group::Text, "{text}");
        }
    }

    #[test]
    fn counts_in_legend_order_without_empty_groups() {
        assert_eq!(
            group_counts(&groups(&prompt())),
            vec![
                (Group::System, 6),
                (Group::Text, 5),
                (Group::Audio, 1),
                (Group::Video, 2),
                (Group::Marker, 4)
            ]
        );
    }

    #[test]
    fn quoted_shows_whitespace() {
        assert_eq!(quoted("\n"), "\"\\n\"");
        assert_eq!(quoted(" the"), "\" the\"");
        assert_eq!(quoted("a\tb"), "\"a\\tb\"");
        assert_eq!(quoted(""), "\"\"");
    }
}
