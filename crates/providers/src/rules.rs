//! `[accounts.rules]`: what an account archives (PRODUCT.md section 10).
//!
//! Every adapter states, for each media message of a webhook, the facts
//! the rules look at ([`Facts`]: direction, media type, chat) as the
//! payload gives them, and makes its job through `Account::job`, which
//! asks [`Rules::exclusion`] first: an excluded message makes no job and
//! is answered under `ignored`. A fact the payload does not give never
//! excludes a message (the archive errs on the side of keeping), except
//! that a non-empty `chats_allow` admits only the chats it names.
//!
//! `max_file_bytes` is not judged here: a file over it is still a job,
//! which ends `dead` with reason `too-large` without being downloaded when
//! the provider announced its size, or as soon as the download passes the
//! cap (PRODUCT.md: "recorded, not fetched"). The pipeline reads it through
//! [`Provider::max_file_bytes`](crate::Provider::max_file_bytes).

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer};

use crate::Direction;

/// What kind of media a message carries, as the rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A photo.
    Image,
    /// A video (a round video note too).
    Video,
    /// An audio file sent as a file.
    Audio,
    /// A voice note (WhatsApp's push-to-talk, `ptt`).
    Voice,
    /// A document of any type.
    Document,
    /// A sticker.
    Sticker,
}

impl MediaKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Voice => "voice",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// The kind a WhatsApp message type names (`imageMessage` and Meta's
    /// `image` alike); an audio is a voice note when the payload says so
    /// (`ptt` in Baileys stubs, `voice` in Cloud API webhooks). `None` for
    /// a name that is not a media message.
    pub(crate) fn from_message_type(name: &str, voice: bool) -> Option<Self> {
        let base = name.strip_suffix("Message").unwrap_or(name);
        Some(match base {
            "image" => MediaKind::Image,
            "video" | "ptv" => MediaKind::Video,
            "audio" if voice => MediaKind::Voice,
            "audio" => MediaKind::Audio,
            "voice" | "ptt" => MediaKind::Voice,
            "document" | "documentWithCaption" => MediaKind::Document,
            "sticker" => MediaKind::Sticker,
            _ => return None,
        })
    }

    /// The kind a mime type suggests, for payloads that name no message
    /// type: `image/*`, `video/*` and `audio/*` are those; anything else is
    /// a document.
    pub(crate) fn from_mime_type(mime: &str) -> Self {
        match mime.split('/').next().map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("image") => MediaKind::Image,
            Some(t) if t.eq_ignore_ascii_case("video") => MediaKind::Video,
            Some(t) if t.eq_ignore_ascii_case("audio") => MediaKind::Audio,
            _ => MediaKind::Document,
        }
    }
}

/// `[accounts.rules]` as written. Every key is optional; without the
/// table an account archives everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// `["incoming", "outgoing"]` by default: which messages to archive,
    /// seen from the account (`outgoing`: sent from its own phone or API).
    #[serde(default)]
    directions: Option<Vec<Direction>>,
    /// All six kinds by default (`image`, `video`, `audio`, `voice`,
    /// `document`, `sticker`).
    #[serde(default)]
    media_types: Option<Vec<MediaKind>>,
    /// Files larger than this many bytes are not archived: their job ends
    /// `dead` with reason `too-large`. None by default (only
    /// `fetch.max_file_bytes` applies).
    #[serde(default)]
    max_file_bytes: Option<u64>,
    /// Chat ids to archive, compared exactly with the chat id the
    /// manifests record; empty (the default): every chat.
    #[serde(default)]
    chats_allow: Vec<String>,
    /// Chat ids never archived; checked after `chats_allow`.
    #[serde(default)]
    chats_deny: Vec<String>,
}

/// Deserializes `rules`, its problems prefixed with the key (serde's own
/// messages name the field, not the table it is in).
pub(crate) fn rules_table<'de, D: Deserializer<'de>>(d: D) -> Result<RulesConfig, D::Error> {
    RulesConfig::deserialize(d).map_err(|e| serde::de::Error::custom(format_args!("rules: {e}")))
}

impl RulesConfig {
    /// Every problem of the table, each starting with its key path
    /// (`rules.chats_deny[1]: ...`). Pure: no I/O.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.directions.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                "rules.directions: names no direction, so nothing would be archived (leave the key out for both)".into(),
            );
        }
        if self.media_types.as_ref().is_some_and(Vec::is_empty) {
            problems.push(
                "rules.media_types: names no media type, so nothing would be archived (leave the key out for all)".into(),
            );
        }
        if self.max_file_bytes == Some(0) {
            problems.push("rules.max_file_bytes: must be above 0".into());
        }
        for (key, list) in [
            ("chats_allow", &self.chats_allow),
            ("chats_deny", &self.chats_deny),
        ] {
            for (i, chat) in list.iter().enumerate() {
                // A chat id a webhook could not carry would never match.
                if let Err(e) = archiver_core::bounds::check_id(key, chat) {
                    problems.push(format!("rules.{key}[{i}]: {}", e.problem));
                }
            }
        }
        for (i, chat) in self.chats_deny.iter().enumerate() {
            if self.chats_allow.contains(chat) {
                problems.push(format!(
                    "rules.chats_deny[{i}]: {chat:?} is in chats_allow too; list it in one of them"
                ));
            }
        }
        problems
    }
}

/// The checked rules of one account.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rules {
    /// `None`: both.
    directions: Option<BTreeSet<Direction>>,
    /// `None`: all.
    media_types: Option<BTreeSet<MediaKind>>,
    max_file_bytes: Option<u64>,
    chats_allow: BTreeSet<String>,
    chats_deny: BTreeSet<String>,
}

/// What the rules look at, as one message's payload gives it (`None`:
/// the payload does not say).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Facts<'a> {
    pub(crate) direction: Option<Direction>,
    pub(crate) media_type: Option<MediaKind>,
    pub(crate) chat_id: Option<&'a str>,
}

impl Rules {
    /// The rules `config` states (checked by [`RulesConfig::problems`]).
    pub(crate) fn new(config: &RulesConfig) -> Self {
        Self {
            directions: config
                .directions
                .as_ref()
                .map(|d| d.iter().copied().collect()),
            media_types: config
                .media_types
                .as_ref()
                .map(|m| m.iter().copied().collect()),
            max_file_bytes: config.max_file_bytes,
            chats_allow: config.chats_allow.iter().cloned().collect(),
            chats_deny: config.chats_deny.iter().cloned().collect(),
        }
    }

    /// Why a message with these `facts` is not archived, or `None` when it
    /// is.
    pub(crate) fn exclusion(&self, facts: &Facts<'_>) -> Option<String> {
        if let (Some(allowed), Some(direction)) = (&self.directions, facts.direction)
            && !allowed.contains(&direction)
        {
            return Some(format!(
                "direction {} is not in rules.directions",
                direction.as_str()
            ));
        }
        if let (Some(allowed), Some(kind)) = (&self.media_types, facts.media_type)
            && !allowed.contains(&kind)
        {
            return Some(format!(
                "media type {} is not in rules.media_types",
                kind.as_str()
            ));
        }
        if !self.chats_allow.is_empty() {
            match facts.chat_id {
                None => return Some("the chat is unknown and rules.chats_allow is set".into()),
                Some(chat) if !self.chats_allow.contains(chat) => {
                    return Some(format!("chat {chat:?} is not in rules.chats_allow"));
                }
                Some(_) => {}
            }
        }
        if let Some(chat) = facts.chat_id
            && self.chats_deny.contains(chat)
        {
            return Some(format!("chat {chat:?} is in rules.chats_deny"));
        }
        None
    }

    /// `rules.max_file_bytes`.
    pub(crate) fn max_file_bytes(&self) -> Option<u64> {
        self.max_file_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Result<RulesConfig, String> {
        let value: toml::Value = toml::from_str(toml).map_err(|e| e.to_string())?;
        rules_table(value).map_err(|e| e.to_string())
    }

    fn rules(toml: &str) -> Rules {
        let config = config(toml).unwrap();
        assert_eq!(config.problems(), Vec::<String>::new());
        Rules::new(&config)
    }

    fn facts(
        direction: Option<Direction>,
        media_type: Option<MediaKind>,
        chat_id: Option<&str>,
    ) -> Facts<'_> {
        Facts {
            direction,
            media_type,
            chat_id,
        }
    }

    const GROUP: &str = "120363000000000000@g.us";
    const PERSON: &str = "5511988887777@s.whatsapp.net";

    #[test]
    fn without_rules_everything_is_archived() {
        let rules = rules("");
        for direction in [Direction::Incoming, Direction::Outgoing] {
            for kind in [
                MediaKind::Image,
                MediaKind::Video,
                MediaKind::Audio,
                MediaKind::Voice,
                MediaKind::Document,
                MediaKind::Sticker,
            ] {
                let f = facts(Some(direction), Some(kind), Some(GROUP));
                assert_eq!(rules.exclusion(&f), None, "{f:?}");
            }
        }
        assert_eq!(rules.exclusion(&Facts::default()), None);
        assert_eq!(rules.max_file_bytes(), None);
    }

    #[test]
    fn directions_exclude_the_other_direction() {
        let rules = rules(r#"directions = ["incoming"]"#);
        let incoming = facts(Some(Direction::Incoming), None, None);
        let outgoing = facts(Some(Direction::Outgoing), None, None);
        assert_eq!(rules.exclusion(&incoming), None);
        assert_eq!(
            rules.exclusion(&outgoing).as_deref(),
            Some("direction outgoing is not in rules.directions")
        );
        assert_eq!(
            rules.exclusion(&Facts::default()),
            None,
            "an unknown direction is archived"
        );
    }

    #[test]
    fn media_types_exclude_the_kinds_not_listed() {
        let rules = rules(r#"media_types = ["image", "voice"]"#);
        let of = |kind| facts(None, Some(kind), None);
        assert_eq!(rules.exclusion(&of(MediaKind::Image)), None);
        assert_eq!(rules.exclusion(&of(MediaKind::Voice)), None);
        assert_eq!(
            rules.exclusion(&of(MediaKind::Audio)).as_deref(),
            Some("media type audio is not in rules.media_types"),
            "a voice note and an audio file are told apart"
        );
        assert!(rules.exclusion(&of(MediaKind::Sticker)).is_some());
        assert_eq!(rules.exclusion(&Facts::default()), None);
    }

    #[test]
    fn chats_allow_admits_only_its_chats_and_an_unknown_chat_is_not_one() {
        let rules = rules(&format!("chats_allow = [{GROUP:?}]"));
        assert_eq!(rules.exclusion(&facts(None, None, Some(GROUP))), None);
        assert_eq!(
            rules.exclusion(&facts(None, None, Some(PERSON))).as_deref(),
            Some(format!("chat {PERSON:?} is not in rules.chats_allow").as_str())
        );
        assert!(rules.exclusion(&facts(None, None, None)).is_some());
    }

    #[test]
    fn chats_deny_excludes_its_chats() {
        let rules = rules(&format!("chats_deny = [{GROUP:?}]"));
        assert_eq!(
            rules.exclusion(&facts(None, None, Some(GROUP))).as_deref(),
            Some(format!("chat {GROUP:?} is in rules.chats_deny").as_str())
        );
        assert_eq!(rules.exclusion(&facts(None, None, Some(PERSON))), None);
        assert_eq!(rules.exclusion(&facts(None, None, None)), None);
    }

    #[test]
    fn the_rules_combine() {
        let rules = rules(&format!(
            r#"directions = ["incoming"]
               media_types = ["image"]
               chats_deny = [{GROUP:?}]
               max_file_bytes = 1000"#
        ));
        let ok = facts(
            Some(Direction::Incoming),
            Some(MediaKind::Image),
            Some(PERSON),
        );
        assert_eq!(rules.exclusion(&ok), None);
        assert!(
            rules
                .exclusion(&Facts {
                    chat_id: Some(GROUP),
                    ..ok
                })
                .is_some()
        );
        assert!(
            rules
                .exclusion(&Facts {
                    media_type: Some(MediaKind::Video),
                    ..ok
                })
                .is_some()
        );
        assert!(
            rules
                .exclusion(&Facts {
                    direction: Some(Direction::Outgoing),
                    ..ok
                })
                .is_some()
        );
        assert_eq!(rules.max_file_bytes(), Some(1000));
    }

    #[test]
    fn problems_name_their_key_path() {
        let bad = config(
            r#"directions = []
               media_types = []
               max_file_bytes = 0
               chats_allow = ["a@g.us", ""]
               chats_deny = ["b@g.us", "a@g.us"]"#,
        )
        .unwrap();
        let problems = bad.problems();
        for expected in [
            "rules.directions: names no direction",
            "rules.media_types: names no media type",
            "rules.max_file_bytes: must be above 0",
            "rules.chats_allow[1]: is empty",
            "rules.chats_deny[1]: \"a@g.us\" is in chats_allow too",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected:?} not in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 5, "{problems:#?}");
        let long = format!("chats_deny = [{:?}]", "9".repeat(300));
        let problems = config(&long).unwrap().problems();
        assert!(
            problems.iter().any(|p| p.contains("rules.chats_deny[0]")),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_and_values_are_refused_under_rules() {
        for (toml, expected) in [
            (
                "direction = [\"incoming\"]",
                "rules: unknown field `direction`",
            ),
            (
                "directions = [\"inbound\"]",
                "rules: unknown variant `inbound`",
            ),
            (
                "media_types = [\"photo\"]",
                "rules: unknown variant `photo`",
            ),
            ("max_file_bytes = -1", "rules:"),
            ("chats_deny = \"a@g.us\"", "rules:"),
        ] {
            let err = config(toml).unwrap_err();
            assert!(err.starts_with(expected), "{toml}: {err}");
        }
    }

    #[test]
    fn message_types_and_mime_types_map_to_kinds() {
        for (name, voice, kind) in [
            ("imageMessage", false, Some(MediaKind::Image)),
            ("image", false, Some(MediaKind::Image)),
            ("videoMessage", false, Some(MediaKind::Video)),
            ("ptvMessage", false, Some(MediaKind::Video)),
            ("audioMessage", false, Some(MediaKind::Audio)),
            ("audioMessage", true, Some(MediaKind::Voice)),
            ("audio", true, Some(MediaKind::Voice)),
            ("voice", false, Some(MediaKind::Voice)),
            ("ptt", false, Some(MediaKind::Voice)),
            ("documentMessage", false, Some(MediaKind::Document)),
            (
                "documentWithCaptionMessage",
                false,
                Some(MediaKind::Document),
            ),
            ("stickerMessage", false, Some(MediaKind::Sticker)),
            ("textMessage", false, None),
        ] {
            assert_eq!(
                MediaKind::from_message_type(name, voice),
                kind,
                "{name} {voice}"
            );
        }
        assert_eq!(MediaKind::from_mime_type("image/jpeg"), MediaKind::Image);
        assert_eq!(MediaKind::from_mime_type("video/mp4"), MediaKind::Video);
        assert_eq!(
            MediaKind::from_mime_type("audio/ogg; codecs=opus"),
            MediaKind::Audio
        );
        assert_eq!(
            MediaKind::from_mime_type("application/pdf"),
            MediaKind::Document
        );
    }
}
