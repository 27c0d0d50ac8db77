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
    if let Some(Command::Config { action }) = &cli.command {
        return kubewire::config_command(action, &cli.flags);
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
