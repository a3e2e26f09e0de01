//! What one setting's declaration holds, and how a declared setting is resolved: a flag or
//! environment value over the config file over the default, parsed by its type and checked,
//! with an error that names the setting the way the user set it.
//!
//! The declarations themselves are in `settings.rs`; `settings!` turns each into its flag,
//! its config file key, its resolved field, and its row of [`SETTINGS`](super::SETTINGS).

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BackendUrl, ConfigError, LogFormat, Secret};

/// One setting. Its environment variable is `HERALD_` and the key in upper case, its flag the
/// key with dashes: both derived at compile time, so they cannot drift from the key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key in the config file (`http_addr`).
    pub key: &'static str,
    /// `HERALD_HTTP_ADDR`.
    pub env: &'static str,
    /// `http-addr`, used as `--http-addr`.
    pub flag: &'static str,
    /// Whether the config file may set it (only the file's own path may not).
    pub in_file: bool,
    pub default: DefaultValue,
    /// One line of Markdown: the README's description, also `--help` and the JSON listing.
    pub doc: &'static str,
    /// May carry credentials: hidden in `--help`, passed by the chart through its Secret.
    /// Masking in `herald config` output follows the value's type (`Secret`, `BackendUrl`).
    pub secret: bool,
    /// Shown in `--help` as `--flag <VALUE_NAME>`.
    pub value_name: Option<&'static str>,
    pub helm: Helm,
}

impl Setting {
    /// What every declaration starts from; `settings!` fills in the names.
    pub(super) const BASE: Setting = Setting {
        key: "",
        env: "",
        flag: "",
        in_file: true,
        default: DefaultValue::Unset("none"),
        doc: "",
        secret: false,
        value_name: None,
        helm: Helm::NotAValue(""),
    };
}

/// A setting's value when nothing sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Text as a flag would give it, parsed like one.
    Text(&'static str),
    /// Unset (an optional setting, an empty list, or computed at startup), described for
    /// readers: `none (standalone)`, `hostname + random suffix`.
    Unset(&'static str),
}

/// How the Helm chart sets a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Helm {
    /// From this values path, the value as the variable's text (lists comma-separated).
    Value(&'static str),
    /// A listen address `0.0.0.0:<port>` from the port at this values path.
    ListenPort(&'static str),
    /// Not from a value; why, and what the chart sets instead.
    NotAValue(&'static str),
}

/// `HERALD_` and the key in upper case, as bytes; `N` is the key's length + 7.
pub(super) const fn env_name<const N: usize>(key: &str) -> [u8; N] {
    let prefix = b"HERALD_";
    let key = key.as_bytes();
    let mut name = [0; N];
    let mut i = 0;
    while i < prefix.len() {
        name[i] = prefix[i];
        i += 1;
    }
    let mut j = 0;
    while j < key.len() {
        name[i + j] = key[j].to_ascii_uppercase();
        j += 1;
    }
    name
}

/// The key with dashes for underscores, as bytes; `N` is the key's length.
pub(super) const fn flag_name<const N: usize>(key: &str) -> [u8; N] {
    let key = key.as_bytes();
    let mut name = [0; N];
    let mut i = 0;
    while i < key.len() {
        name[i] = if key[i] == b'_' { b'-' } else { key[i] };
        i += 1;
    }
    name
}

pub(super) const fn utf8(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => panic!("a setting key must be ASCII"),
    }
}

/// Declares settings. Each `key: Type [where check] { field: value, ... }` becomes a
/// `ConfigArgs` field holding its flag or variable text, a `FileConfig` field for the config
/// file, a `Values` field of `Type` resolved by [`resolve`], and a row of `SETTINGS` (after
/// the first row, the config file's own setting, which no file can set). The fields are
/// [`Setting`]'s; `check`, a function or a call in parentheses, returns `Result<(), String>`.
macro_rules! settings {
    (
        $first:expr;
        $(
            $key:ident : $ty:ty $(where $check:tt)? { $($field:ident : $value:expr),* $(,)? }
        )*
    ) => {
        /// Every setting, in the order of `--help`, `--print-env` and the README.
        pub static SETTINGS: &[Setting] = &[$first, $(settings!(@setting $key { $($field: $value),* })),*];

        /// Flags, each also readable from its `HERALD_*` environment variable. Values stay
        /// text here; `Config::load` parses them and names the setting on error.
        #[derive(Debug, Clone, Default)]
        pub struct ConfigArgs {
            /// The config file (`--config`, `HERALD_CONFIG`).
            pub config: Option<std::path::PathBuf>,
            $(pub $key: Option<String>,)*
            /// The keys of the settings given as flags rather than variables, so that an
            /// error names what the user typed.
            pub(super) given_as_flags: Vec<&'static str>,
        }

        impl ConfigArgs {
            /// The text given for the setting `key` by a flag or its variable.
            pub(super) fn text_mut(&mut self, key: &str) -> Option<&mut Option<String>> {
                match key {
                    $(stringify!($key) => Some(&mut self.$key),)*
                    _ => None,
                }
            }
        }

        /// The config file. Unknown keys are errors, so a typo is reported rather than
        /// silently ignored.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct FileConfig {
            $(pub $key: Option<<$ty as $crate::config::setting::SettingType>::File>,)*
            #[serde(default)]
            pub namespaces: Namespaces,
        }

        /// Every setting resolved and checked.
        pub(super) struct Values {
            $(pub $key: $ty,)*
        }

        impl Values {
            /// Resolves each setting from `args` over `file` (read from `path`) over its default.
            pub(super) fn resolve(
                args: &ConfigArgs,
                file: FileConfig,
                path: Option<&std::path::Path>,
            ) -> Result<Values, ConfigError> {
                Ok(Values {
                    $($key: $crate::config::setting::resolve(
                        &settings!(@setting $key { $($field: $value),* }),
                        args.$key.as_deref(),
                        args.given_as_flags.contains(&stringify!($key)),
                        file.$key,
                        path,
                        // `_value` is unused by settings without a check.
                        |_value: &$ty| -> Result<(), String> {
                            $(($check)(_value)?;)?
                            Ok(())
                        },
                    )?,)*
                })
            }
        }
    };
    (@setting $key:ident { $($field:ident : $value:expr),* }) => {{
        const KEY: &str = stringify!($key);
        const ENV: [u8; KEY.len() + 7] = $crate::config::setting::env_name::<{ KEY.len() + 7 }>(KEY);
        const FLAG: [u8; KEY.len()] = $crate::config::setting::flag_name::<{ KEY.len() }>(KEY);
        Setting {
            key: KEY,
            env: $crate::config::setting::utf8(&ENV),
            flag: $crate::config::setting::utf8(&FLAG),
            $($field: $value,)*
            ..Setting::BASE
        }
    }};
}

pub(super) use settings;

/// A setting's type: how its text (a flag, a variable, a declared default) and its config
/// file value become one value.
pub trait SettingType: Sized {
    /// What the config file holds.
    type File: DeserializeOwned;
    fn parse(text: &str) -> Result<Self, String>;
    fn from_file(value: Self::File) -> Self;
    /// The value of a setting declared `DefaultValue::Unset` that nothing sets; `None` for types
    /// that need a value.
    fn unset() -> Option<Self> {
        None
    }
}

macro_rules! parsed_by_from_str {
    ($($ty:ty),*) => {$(
        impl SettingType for $ty {
            type File = $ty;
            fn parse(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: <$ty as FromStr>::Err| e.to_string())
            }
            fn from_file(value: $ty) -> Self {
                value
            }
        }
    )*};
}

parsed_by_from_str!(
    SocketAddr, u64, usize, u32, bool, String, PathBuf, LogFormat
);

impl SettingType for BackendUrl {
    type File = String;
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn from_file(value: String) -> Self {
        BackendUrl(value)
    }
}

impl SettingType for Secret {
    type File = String;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Secret::new(text))
    }
    fn from_file(value: String) -> Self {
        Secret::new(value)
    }
}

impl<T: SettingType> SettingType for Option<T> {
    type File = T::File;
    fn parse(text: &str) -> Result<Self, String> {
        T::parse(text).map(Some)
    }
    fn from_file(value: T::File) -> Self {
        Some(T::from_file(value))
    }
    fn unset() -> Option<Self> {
        Some(None)
    }
}

/// Comma-separated as text, an array in the file; empty entries are dropped.
impl<T: SettingType<File = String>> SettingType for Vec<T> {
    type File = Vec<String>;
    fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(T::parse)
            .collect()
    }
    fn from_file(value: Vec<String>) -> Self {
        value
            .into_iter()
            .filter(|item| !item.is_empty())
            .map(T::from_file)
            .collect()
    }
    fn unset() -> Option<Self> {
        Some(Vec::new())
    }
}

/// One setting: its flag or variable text (`text`) over its file value over its default,
/// then `check`ed. An error names the flag, the variable, or the file and the key.
pub fn resolve<T: SettingType>(
    setting: &Setting,
    text: Option<&str>,
    given_as_flag: bool,
    file: Option<T::File>,
    path: Option<&Path>,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<T, ConfigError> {
    if let Some(raw) = text {
        let invalid = |message| match given_as_flag {
            true => ConfigError::InvalidFlag {
                flag: setting.flag,
                message,
            },
            false => ConfigError::Invalid {
                key: setting.env,
                message,
            },
        };
        let value = T::parse(raw.trim()).map_err(|e| invalid(format!("{raw:?}: {e}")))?;
        check(&value).map_err(invalid)?;
        return Ok(value);
    }
    if let Some(value) = file {
        let value = T::from_file(value);
        check(&value).map_err(|message| ConfigError::InvalidInFile {
            key: setting.key,
            path: path.map(Path::to_owned).unwrap_or_default(),
            message,
        })?;
        return Ok(value);
    }
    let declared = |message: String| ConfigError::Invalid {
        key: setting.env,
        message: format!("the declared default is wrong: {message}"),
    };
    match setting.default {
        DefaultValue::Text(text) => T::parse(text).map_err(declared),
        DefaultValue::Unset(_) => T::unset().ok_or_else(|| declared("no value".into())),
    }
}

/// A number at least `min`.
pub(super) fn at_least<T: PartialOrd + Display>(min: T) -> impl Fn(&T) -> Result<(), String> {
    move |value| {
        if *value < min {
            return Err(format!("must be at least {min}"));
        }
        Ok(())
    }
}

/// A count that is 0 or at least 2: an SSE client's handshake takes two connections at once,
/// the stream and the `/rpc` POST that carries `connect`.
pub(super) fn off_or_at_least_two(zero: &'static str) -> impl Fn(&usize) -> Result<(), String> {
    move |value| {
        if *value == 1 {
            return Err(format!(
                "must be 0 ({zero}) or at least 2: an SSE handshake takes two connections"
            ));
        }
        Ok(())
    }
}
