//! The flags of [`SETTINGS`], each also read from its `HERALD_*` environment variable.
//! `ConfigArgs` itself is declared by `settings!`; this is its command-line side.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

use super::ConfigArgs;
use super::listing::plain;
use super::setting::{DefaultValue, Setting};
use super::settings::SETTINGS;

fn arg(setting: &Setting) -> Arg {
    let default = match setting.default {
        DefaultValue::Text(text) => text,
        DefaultValue::Unset(description) => description,
    };
    Arg::new(setting.key)
        .long(setting.flag)
        .env(setting.env)
        .value_name(
            setting
                .value_name
                .unwrap_or(&setting.env["HERALD_".len()..]),
        )
        .hide_env_values(setting.secret)
        .help(format!(
            "{} [default: {}]",
            plain(setting.doc),
            plain(default)
        ))
}

impl clap::Args for ConfigArgs {
    fn augment_args(command: Command) -> Command {
        SETTINGS
            .iter()
            .fold(command, |command, setting| command.arg(arg(setting)))
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl clap::FromArgMatches for ConfigArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ConfigArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            let Some(text) = matches.get_one::<String>(setting.key) else {
                continue;
            };
            match self.text_mut(setting.key) {
                Some(slot) => *slot = Some(text.clone()),
                // Only the config file's own setting is not kept as text.
                None => self.config = Some(PathBuf::from(text)),
            }
            if matches.value_source(setting.key) == Some(ValueSource::CommandLine) {
                self.given_as_flags.push(setting.key);
            }
        }
        Ok(())
    }
}
