//! The kubewire binary: flags, configuration, logging, and an exit code.

use clap::Parser;
use kubewire::operations::cli::{Cli, Command};
use kubewire::operations::failure::Chain;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before any thread starts: an allocator setting.
    kubewire::fix_mmap_threshold();
    let cli = Cli::parse();
    let asked = match &cli.command {
        Some(Command::Config { action }) => return kubewire::config_command(action, &cli.flags),
        Some(Command::Explain {
            name,
            qtype,
            from,
            ask,
        }) => Some(kubewire::operations::debug::explain_command(
            ask,
            name,
            qtype.as_deref(),
            from.as_deref(),
        )),
        Some(Command::Top { ask }) => Some(kubewire::operations::debug::top_command(ask)),
        None => None,
    };
    if let Some(asked) = asked {
        return match asked {
            Ok(text) => {
                let _ = write!(std::io::stdout(), "{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                let _ = writeln!(std::io::stderr(), "error: {}", Chain(&error));
                ExitCode::FAILURE
            }
        };
    }
    let config = match cli.flags.config() {
        Ok(config) => config,
        Err(error) => {
            // Logging is not set up yet: its settings are in this config.
            let _ = writeln!(std::io::stderr(), "error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let log = kubewire::operations::logging::init(config.log.format, &config.log.level);
    let reloading = kubewire::Reloading {
        path: cli.flags.config.clone(),
        flags: cli.flags,
        log,
    };
    match kubewire::run(config, reloading) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{}", Chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
