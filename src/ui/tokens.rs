//! Token groups: which part of the prompt each position belongs to (system text, user text, audio, …).
//!
//! Pure functions only. The classification lives here for now because only the token strip needs it; a
//! later issue moves a richer token map (with turn boundaries from the tokenizer) into the library.

use crate::model::config::TokenIds;

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
}

/// Classifies every position of `ids`.
///
/// Media placeholders and their brackets are recognised by the ids in `tokens`. The system turn is found
/// from `im_start` (the `<|im_start|>` id; `None` when unknown): it spans from the start up to, not
/// including, the `<|im_start|>` that opens the first user turn — the one followed by `tokens.user` when
/// that id is known, otherwise the second `<|im_start|>`. Without a system turn nothing is `System`.
pub fn token_groups(ids: &[u32], tokens: &TokenIds, im_start: Option<u32>) -> Vec<Group> {
    let system_end = im_start.map_or(0, |start| system_turn_end(ids, start, tokens.user));
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if id == tokens.audio {
                Group::Audio
            } else if id == tokens.video {
                Group::Video
            } else if id == tokens.image {
                Group::Image
            } else if [
                tokens.audio_start,
                tokens.audio_end,
                tokens.vision_start,
                tokens.vision_end,
            ]
            .contains(&id)
            {
                Group::Marker
            } else if i < system_end {
                Group::System
            } else {
                Group::Text
            }
        })
        .collect()
}

/// End (exclusive) of the system turn; 0 when the prompt does not start with one.
fn system_turn_end(ids: &[u32], im_start: u32, user: Option<u32>) -> usize {
    let starts: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == im_start)
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = starts.first() else {
        return 0;
    };
    if let Some(user) = user {
        // The first turn opening with `user` ends the system part; a prompt that starts with the user
        // turn has no system part.
        if let Some(&u) = starts.iter().find(|&&s| ids.get(s + 1) == Some(&user)) {
            return if u == first { 0 } else { u };
        }
    }
    starts.get(1).copied().unwrap_or(0)
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

    const IM_START: u32 = 151644;
    const USER: u32 = 872;

    fn ids() -> TokenIds {
        TokenIds {
            audio: 151646,
            image: 151655,
            video: 151656,
            audio_start: 151647,
            audio_end: 151648,
            vision_start: 151652,
            vision_end: 151653,
            user: Some(USER),
            bos: Some(IM_START),
            eos: None,
            pad: None,
        }
    }

    /// `<|im_start|>system\nX<|im_end|>\n<|im_start|>user\n<vision_bos><video><video><vision_eos>
    /// <audio_bos><audio><audio_eos>hi<|im_end|>`
    fn prompt() -> Vec<u32> {
        let t = ids();
        vec![
            IM_START,
            8948,
            198,
            55,
            151645,
            198, // system turn: 0..6
            IM_START,
            USER,
            198, // 6..9
            t.vision_start,
            t.video,
            t.video,
            t.vision_end, // 9..13
            t.audio_start,
            t.audio,
            t.audio_end, // 13..16
            6023,
            151645, // 16..18
        ]
    }

    #[test]
    fn classifies_system_media_and_text() {
        let g = token_groups(&prompt(), &ids(), Some(IM_START));
        use Group::*;
        assert_eq!(
            g,
            vec![
                System, System, System, System, System, System, Text, Text, Text, Marker, Video,
                Video, Marker, Marker, Audio, Marker, Text, Text
            ]
        );
    }

    #[test]
    fn no_im_start_means_no_system_turn() {
        let g = token_groups(&prompt(), &ids(), None);
        assert!(!g.contains(&Group::System));
        assert_eq!(g[0], Group::Text);
    }

    #[test]
    fn prompt_starting_with_user_turn_has_no_system() {
        let p = prompt()[6..].to_vec();
        let g = token_groups(&p, &ids(), Some(IM_START));
        assert!(!g.contains(&Group::System));
    }

    #[test]
    fn without_user_id_the_second_im_start_ends_the_system_turn() {
        let mut t = ids();
        t.user = None;
        let g = token_groups(&prompt(), &t, Some(IM_START));
        assert_eq!(g.iter().filter(|&&x| x == Group::System).count(), 6);
        assert_eq!(g[6], Group::Text);
    }

    #[test]
    fn image_placeholder_and_empty_prompt() {
        let t = ids();
        assert_eq!(
            token_groups(&[t.image], &t, Some(IM_START)),
            vec![Group::Image]
        );
        assert!(token_groups(&[], &t, Some(IM_START)).is_empty());
    }

    #[test]
    fn counts_in_legend_order_without_empty_groups() {
        let g = token_groups(&prompt(), &ids(), Some(IM_START));
        assert_eq!(
            group_counts(&g),
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
