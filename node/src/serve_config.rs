//! `strata serve --config FILE`: every `serve` flag as a TOML key (`data-dir`, or `data_dir`).
//!
//! Precedence is file < environment < flags: the file's values become the flags' defaults, so
//! clap's own rules (an environment variable beats a default, a flag beats both) do the rest,
//! and every value goes through the same parser and checks as the flag. A key that names no
//! flag is an error that names the key. `--print-config` shows the effective configuration as
//! TOML that `--config` reads back, each value with where it came from.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The flags that say how to read the configuration, not what it is.
const NOT_IN_FILE: &[&str] = &["config", "print-config", "help", "version"];

/// The `serve` subcommand's name in [`crate::Cli`].
pub const SERVE: &str = "serve";

/// Loads `path` and makes its values the defaults of `cli`'s `serve` flags.
pub fn apply_file(cli: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    apply_text(cli, &text).with_context(|| format!("in the config file {}", path.display()))
}

/// [`apply_file`] on the file's text.
pub fn apply_text(cli: Command, text: &str) -> anyhow::Result<Command> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| anyhow!("{e}"))?;
    let serve = cli
        .find_subcommand(SERVE)
        .ok_or_else(|| anyhow!("no serve command"))?;
    let mut defaults = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(long.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&long.as_str()))
            .ok_or_else(|| {
                anyhow!("unknown key {key:?}: keys are the flags of `strata serve --help`, without the dashes")
            })?;
        defaults.push((arg.get_id().clone(), value_text(key, value)?));
    }
    Ok(cli.mut_subcommand(SERVE, |mut serve| {
        for (id, text) in defaults {
            // clap keeps defaults as `&'static str` (without its `string` feature): the
            // file's few values live as long as the process anyway.
            let text: &'static str = Box::leak(text.into_boxed_str());
            serve = serve.mut_arg(id, |arg| arg.default_value(text));
        }
        serve
    }))
}

/// A TOML value as the flag's text: strings as they are, numbers and booleans written out,
/// an array as a comma-separated list, a table as `KEY=VALUE,...` (`initial-cluster`).
fn value_text(key: &str, value: &toml::Value) -> anyhow::Result<String> {
    fn scalar(key: &str, value: &toml::Value) -> anyhow::Result<String> {
        match value {
            toml::Value::String(text) => Ok(text.clone()),
            toml::Value::Integer(number) => Ok(number.to_string()),
            toml::Value::Boolean(flag) => Ok(flag.to_string()),
            other => bail!(
                "{key}: a {} is not a value for this key (a string, integer or boolean is)",
                other.type_str()
            ),
        }
    }
    match value {
        toml::Value::Array(items) => Ok(items
            .iter()
            .map(|item| scalar(key, item))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(",")),
        toml::Value::Table(entries) => Ok(entries
            .iter()
            .map(|(name, item)| Ok(format!("{name}={}", scalar(key, item)?)))
            .collect::<anyhow::Result<Vec<_>>>()?
            .join(",")),
        other => scalar(key, other),
    }
}

/// The effective `serve` configuration as TOML, each key with its source; unset options are
/// shown commented out. `--config` reads the output back to the same configuration.
pub fn render(serve: &Command, matches: &ArgMatches) -> String {
    let mut out = String::from("# strata serve: effective configuration\n");
    // In the order of `--help` (a flag given a file default moves to the end of clap's list).
    let plain = <crate::Cli as clap::CommandFactory>::command();
    let order: Vec<clap::Id> = plain
        .find_subcommand(SERVE)
        .map(|plain| plain.get_arguments().map(|a| a.get_id().clone()).collect())
        .unwrap_or_default();
    let args = order
        .iter()
        .filter_map(|id| serve.get_arguments().find(|a| a.get_id() == id));
    for arg in args {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        let id = arg.get_id().as_str();
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if values.is_empty() {
            out.push_str(&format!("# {long} = (not set)\n"));
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => arg.get_env().map_or("environment".into(), |name| {
                name.to_string_lossy().into_owned()
            }),
            // A file's values are the defaults: told apart by differing from the built-in one.
            _ if arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .ne(built_in_default(long)) =>
            {
                "config file".to_string()
            }
            _ => "default".to_string(),
        };
        let value = toml_value(&values.join(","));
        out.push_str(&format!("{long} = {value}  # {source}\n"));
    }
    out
}

/// The default a flag has with no config file.
fn built_in_default(long: &str) -> Vec<String> {
    let plain = <crate::Cli as clap::CommandFactory>::command();
    plain
        .find_subcommand(SERVE)
        .and_then(|serve| serve.get_arguments().find(|a| a.get_long() == Some(long)))
        .map(|arg| {
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Integers and booleans as such, everything else as a TOML string.
fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() || text == "true" || text == "false" {
        text.to_string()
    } else {
        toml::Value::String(text.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn serve_matches(cli: Command, args: &[&str]) -> (Command, ArgMatches) {
        let mut argv = vec!["strata", SERVE];
        argv.extend_from_slice(args);
        let matches = cli.clone().try_get_matches_from(argv).expect("parses");
        let serve = cli.find_subcommand(SERVE).unwrap().clone();
        let serve_matches = matches.subcommand_matches(SERVE).unwrap().clone();
        (serve, serve_matches)
    }

    #[test]
    fn file_values_become_defaults_and_flags_beat_them() {
        let cli = apply_text(
            crate::Cli::command(),
            "node_id = 4\ndata-dir = \"/var/lib/strata\"\njoin = true\n\
             initial-cluster = { 1 = \"10.0.0.1:7421\", 2 = \"10.0.0.2:7421\" }\n",
        )
        .unwrap();
        let (serve, matches) = serve_matches(cli, &["--data-dir", "/tmp/d"]);
        assert_eq!(matches.get_one::<u64>("node_id"), Some(&4));
        assert!(matches.get_flag("join"));
        let text = render(&serve, &matches);
        assert!(text.contains("node-id = 4  # config file"), "{text}");
        assert!(text.contains("data-dir = \"/tmp/d\"  # flag"), "{text}");
        assert!(
            text.contains("initial-cluster = \"1=10.0.0.1:7421,2=10.0.0.2:7421\"  # config file"),
            "{text}"
        );
        assert!(
            text.contains("client-addr = \"127.0.0.1:7420\"  # default"),
            "{text}"
        );
        assert!(text.contains("# tls-dir = (not set)"), "{text}");
    }

    #[test]
    fn the_rendered_configuration_reads_back_the_same() {
        let cli = apply_text(
            crate::Cli::command(),
            "max-value-bytes = 2048\njoin = true\n",
        )
        .unwrap();
        let (serve, matches) = serve_matches(cli, &["--node-id", "7"]);
        let first = render(&serve, &matches);
        let again = apply_text(crate::Cli::command(), &first).unwrap();
        let (serve, matches) = serve_matches(again, &[]);
        let second = render(&serve, &matches);
        let values = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split("  #").next().unwrap().to_string())
                .collect()
        };
        assert_eq!(values(&first), values(&second));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors_that_name_the_key() {
        let error = apply_text(crate::Cli::command(), "data-dri = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("\"data-dri\""), "{error:#}");
        let error = apply_text(crate::Cli::command(), "config = \"other.toml\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("\"config\""), "{error:#}");
        let error = apply_text(crate::Cli::command(), "node-id = 1.5\n").unwrap_err();
        assert!(
            format!("{error:#}").contains("node-id: a float"),
            "{error:#}"
        );
        assert!(apply_text(crate::Cli::command(), "node-id = ").is_err());
    }

    #[test]
    fn a_bad_value_from_the_file_is_refused_like_the_flag() {
        let cli = apply_text(crate::Cli::command(), "node-id = 0\n").unwrap();
        let error = cli
            .try_get_matches_from(["strata", SERVE])
            .expect_err("node id 0 is out of range");
        assert!(error.to_string().contains("--node-id"), "{error}");
    }
}
