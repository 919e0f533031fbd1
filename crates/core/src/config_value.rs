//! Small config value types every crate's config uses: durations written as
//! `"15s"`/`"14d"`, and secrets written as a literal, `{ env = "NAME" }` or
//! `{ file = "/run/secrets/x" }`; and the shape every `validate()` shares:
//! collect every problem, then [`verdict`].
//!
//! These are the only items in this crate that touch the outside world
//! (environment variables and secret files), and only when
//! [`SecretRef::resolve`] is called while the config is being validated.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::Secret;

/// Deserializes a duration written as `"200ms"`, `"15s"`, `"5m"`, `"14d"`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Deserializes an optional duration (see [`duration`]).
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Parses a duration such as `"200ms"`, `"15s"`, `"5m"`, `"14d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); write e.g. \"200ms\", \"15s\", \"5m\", \"14d\"")
    })
}

/// Where a secret comes from, as written in the config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// Written inline (discouraged outside development).
    Literal(String),
    /// `{ env = "NAME" }`: read from an environment variable.
    Env {
        /// The variable's name.
        env: String,
    },
    /// `{ file = "/run/secrets/x" }`: read from a file, one trailing newline trimmed.
    File {
        /// The file's path.
        file: String,
    },
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Literal(_) => f.write_str("Literal([redacted])"),
            SecretRef::Env { env } => write!(f, "Env({env})"),
            SecretRef::File { file } => write!(f, "File({file})"),
        }
    }
}

impl SecretRef {
    /// Reads the secret. The error names the variable or file, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Literal(v) => v.clone(),
            SecretRef::Env { env } => {
                std::env::var(env).map_err(|_| format!("environment variable {env} is not set"))?
            }
            SecretRef::File { file } => {
                let mut v = read_secret_file(file)?;
                if v.ends_with('\n') {
                    v.pop();
                    if v.ends_with('\r') {
                        v.pop();
                    }
                }
                v
            }
        };
        if value.is_empty() {
            return Err("secret is empty".to_owned());
        }
        Ok(Secret::new(value))
    }
}

/// Resolves an optional secret while a config section is checked: the
/// secret, or `None` when it is unset or cannot be read, in which case
/// `problems` gets `{key}: {why}` (naming the variable or file, never a
/// value), so that one check reports every unreadable secret at once.
pub fn resolve_secret(
    key: &str,
    value: Option<&SecretRef>,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    value?
        .resolve()
        .map_err(|e| problems.push(format!("{key}: {e}")))
        .ok()
}

/// The end of every config check: `value` when no problem was found, else
/// every problem at once (so that an operator fixes them in one go).
pub fn verdict<T>(problems: Vec<String>, value: T) -> Result<T, Vec<String>> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

/// The largest secret file read: far above any token or key, and small
/// enough that `{ file = "/dev/zero" }` (or a log file named by mistake) is
/// an error instead of a process that reads forever.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_secret_file(file: &str) -> Result<String, String> {
    use std::io::Read as _;
    let cannot = |e: std::io::Error| format!("cannot read secret file {file}: {e}");
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .map_err(cannot)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "secret file {file} is larger than {MAX_SECRET_FILE_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("secret file {file} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        s: SecretRef,
    }

    fn secret(toml_value: &str) -> SecretRef {
        serde_json::from_str::<Holder>(toml_value).unwrap().s
    }

    #[test]
    fn durations_use_human_units() {
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_duration("soon").unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn secrets_come_from_literal_env_or_file_with_one_newline_trimmed() {
        assert_eq!(secret(r#"{"s":"abc"}"#).resolve().unwrap().expose(), "abc");
        let dir = std::env::temp_dir().join(format!("secret-test-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let from_file = SecretRef::File {
            file: dir.display().to_string(),
        };
        assert_eq!(from_file.resolve().unwrap().expose(), "from-file");
        std::fs::remove_file(&dir).unwrap();
        let missing = SecretRef::Env {
            env: "MEDIA_ARCHIVER_SURELY_UNSET_VAR".into(),
        };
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .contains("MEDIA_ARCHIVER_SURELY_UNSET_VAR")
        );
        assert!(!format!("{:?}", secret(r#"{"s":"abc"}"#)).contains("abc"));
    }

    #[test]
    fn resolving_for_a_config_check_records_the_key_of_each_problem() {
        let mut problems = Vec::new();
        let unset = SecretRef::Env {
            env: "MEDIA_ARCHIVER_SURELY_UNSET_VAR".into(),
        };
        let set = SecretRef::Literal("abc".into());
        assert!(resolve_secret("a.token", None, &mut problems).is_none());
        assert!(resolve_secret("a.key", Some(&unset), &mut problems).is_none());
        let found = resolve_secret("a.other", Some(&set), &mut problems).unwrap();
        assert_eq!(found.expose(), "abc");
        assert_eq!(
            problems,
            ["a.key: environment variable MEDIA_ARCHIVER_SURELY_UNSET_VAR is not set"]
        );
    }

    #[test]
    fn a_check_with_no_problem_yields_its_value_else_every_problem() {
        assert_eq!(verdict(Vec::new(), 7), Ok(7));
        let problems = vec!["a: bad".to_owned(), "b: worse".to_owned()];
        assert_eq!(verdict(problems.clone(), 7), Err(problems));
    }

    #[test]
    fn an_endless_secret_file_is_refused_not_read_forever() {
        let endless = SecretRef::File {
            file: "/dev/zero".into(),
        };
        let error = endless.resolve().unwrap_err();
        assert!(error.contains("larger than 65536 bytes"), "{error}");
    }
}
