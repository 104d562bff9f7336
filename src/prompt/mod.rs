//! One prompt's positions, as every analysis names them: the token map (each position's group, media item,
//! seconds, grid cell and text, classified once), the token groups knockouts and drops are stated in, and
//! the typed selectors (`audio`, `video@1-3`, `item:2`, `pos:56-66`, unions) that resolve against it.
//!
//! Plain data with no model in it: a model family builds the [`TokenMap`] of its prompts
//! (`model::Architecture::token_map`), and the flow engine, the session, the CLI, the worker and the app
//! only read it.

pub mod groups;
pub mod selector;
pub mod token_map;

pub use groups::Groups;
pub use selector::{Selector, Term};
pub use token_map::{TokenInfo, TokenMap};

/// The special-token ids a prompt is classified with, whatever the family: media placeholders (each
/// replaced by one encoder output row), the markers around media, and the chat template's turn tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpecialTokens {
    pub audio: Option<u32>,
    pub image: Option<u32>,
    pub video: Option<u32>,
    /// Brackets around media items (`<|vision_bos|>`, `<|audio_eos|>`, …).
    pub markers: Vec<u32>,
    /// `<|im_start|>`: opens a turn.
    pub im_start: Option<u32>,
    /// `<|im_end|>`: closes a turn.
    pub im_end: Option<u32>,
    /// The `user` role token that follows `<|im_start|>` in the user turn.
    pub user: Option<u32>,
    /// Tokens that end a generated answer.
    pub stop: Vec<u32>,
}

impl SpecialTokens {
    /// A media placeholder of any modality.
    pub fn is_placeholder(&self, id: u32) -> bool {
        [self.audio, self.image, self.video].contains(&Some(id))
    }

    /// A placeholder or a marker: part of a media item.
    pub fn is_media(&self, id: u32) -> bool {
        self.is_placeholder(id) || self.markers.contains(&id)
    }
}
