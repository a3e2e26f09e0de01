//! What is derived from the declarations for people and tools: `herald config --print-env`,
//! and `herald config --settings json|markdown` (the README's Configuration table).

use serde::Serialize;

use super::Config;
use super::setting::{DefaultValue, Helm, Setting};
use super::settings::SETTINGS;

/// The formats of `herald config --settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SettingsFormat {
    /// One object per setting, for tools (the Helm chart check).
    Json,
    /// The README's Configuration table.
    Markdown,
}

/// Every declared setting in `format`.
pub fn settings_listing(format: SettingsFormat) -> String {
    match format {
        SettingsFormat::Json => json(),
        SettingsFormat::Markdown => markdown(),
    }
}

/// A setting as the JSON listing shows it.
#[derive(Serialize)]
struct Listed {
    env: &'static str,
    flag: String,
    /// `None` for the config file's own path.
    toml_key: Option<&'static str>,
    /// The text a flag would give; `None` when unset by default (see `default_doc`).
    default: Option<&'static str>,
    default_doc: &'static str,
    doc: &'static str,
    secret: bool,
    helm: Helm,
}

fn json() -> String {
    let listed: Vec<Listed> = SETTINGS
        .iter()
        .map(|setting| Listed {
            env: setting.env,
            flag: format!("--{}", setting.flag),
            toml_key: setting.in_file.then_some(setting.key),
            default: match setting.default {
                DefaultValue::Text(text) => Some(text),
                DefaultValue::Unset(_) => None,
            },
            default_doc: default_doc(setting),
            doc: setting.doc,
            secret: setting.secret,
            helm: setting.helm,
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&listed).expect("settings serialize");
    text.push('\n');
    text
}

fn default_doc(setting: &Setting) -> &'static str {
    match setting.default {
        DefaultValue::Text(text) | DefaultValue::Unset(text) => text,
    }
}

fn markdown() -> String {
    let mut table = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for setting in SETTINGS {
        let default = match setting.default {
            DefaultValue::Text(text) => format!("`{text}`"),
            DefaultValue::Unset(description) => description.to_owned(),
        };
        table.push_str(&format!(
            "| `{}` | `--{}` | {default} | {} |\n",
            setting.env, setting.flag, setting.doc
        ));
    }
    table.push_str(
        "| (file only) `[namespaces.<name>]` | | see below | channel namespace rules |\n",
    );
    table
}

/// Markdown reduced to plain text for `--help`: no backticks, links as their text.
pub(super) fn plain(markdown: &str) -> String {
    let mut text = String::with_capacity(markdown.len());
    let mut rest = markdown;
    while let Some(start) = rest.find('[') {
        let link = rest[start..]
            .find("](")
            .and_then(|middle| Some((middle, rest[start + middle..].find(')')?)));
        let Some((middle, end)) = link else { break };
        text.push_str(&rest[..start]);
        text.push_str(&rest[start + 1..start + middle]);
        rest = &rest[start + middle + end + 1..];
    }
    text.push_str(rest);
    text.replace('`', "")
}

impl Config {
    /// Every `HERALD_*` variable with its flag and effective value (secrets masked, empty
    /// when unset), one per line, for deployment tooling to check its settings against.
    pub fn to_env_listing(&self) -> String {
        let table: toml::Table = toml::Table::try_from(self).unwrap_or_default();
        let mut listing = String::new();
        for setting in SETTINGS {
            let value = match table.get(setting.key) {
                Some(toml::Value::String(text)) => text.clone(),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                Some(other) => other.to_string(),
                None if !setting.in_file => self
                    .config_file
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default(),
                None => String::new(),
            };
            listing.push_str(&format!("{} --{} {value}\n", setting.env, setting.flag));
        }
        listing
    }
}
