//! The command line both binaries share (`--config FILE`, `--check-config`) and the start-up
//! around it: logging, a bad config as exit status 2 with the message, the async runtime, and
//! the exit status of the run. A binary may add subcommands of its own (`main_with_commands`),
//! which run instead of the service and without its config.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing::error;

use crate::config::ConfigError;

#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML config file; every key can also be set as PANTAU_<SECTION>__<KEY>.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config and exit: 0 when valid, 2 with the offending key when not.
    #[arg(long)]
    check_config: bool,
}

/// Parses the command line, loads the config with `load`, and runs `run` on a multi-threaded
/// runtime. Exit status: 0 on a clean stop, 2 for a bad config, 1 when `run` fails.
pub fn main<C, E, Fut>(
    name: &'static str,
    about: &'static str,
    load: impl FnOnce(Option<&Path>) -> Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> Fut,
) -> ExitCode
where
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    main_with_commands(
        name,
        about,
        load,
        summary,
        run,
        |never: NoCommands| match never {},
    )
}

/// As [`main`], on a runtime of at most `worker_threads` worker threads instead of one per
/// core. For a process whose async work is light (the agent): each worker costs a stack and
/// a malloc arena, so on a 32-core server the default would multiply its memory for nothing.
pub fn main_with_workers<C, E, Fut>(
    name: &'static str,
    about: &'static str,
    worker_threads: usize,
    load: impl FnOnce(Option<&Path>) -> Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> Fut,
) -> ExitCode
where
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    run_main(
        name,
        about,
        Some(worker_threads),
        load,
        summary,
        run,
        |never: NoCommands| match never {},
    )
}

/// As [`main_with_workers`], plus the subcommands `S` (see [`main_with_commands`]).
pub fn main_with_workers_and_commands<S, C, E, Fut>(
    name: &'static str,
    about: &'static str,
    worker_threads: usize,
    load: impl FnOnce(Option<&Path>) -> Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> Fut,
    command: impl FnOnce(S) -> ExitCode,
) -> ExitCode
where
    S: Subcommand,
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    run_main(
        name,
        about,
        Some(worker_threads),
        load,
        summary,
        run,
        command,
    )
}

/// No subcommands: the service only.
#[derive(Debug, Subcommand)]
pub enum NoCommands {}

/// As [`main`], plus the subcommands `S`: when one is given, `command` runs it and its exit
/// status is the process's; the config is not loaded.
pub fn main_with_commands<S, C, E, Fut>(
    name: &'static str,
    about: &'static str,
    load: impl FnOnce(Option<&Path>) -> Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> Fut,
    command: impl FnOnce(S) -> ExitCode,
) -> ExitCode
where
    S: Subcommand,
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    run_main(name, about, None, load, summary, run, command)
}

fn run_main<S, C, E, Fut>(
    name: &'static str,
    about: &'static str,
    worker_threads: Option<usize>,
    load: impl FnOnce(Option<&Path>) -> Result<C, ConfigError>,
    summary: impl FnOnce(&C) -> String,
    run: impl FnOnce(C) -> Fut,
    command: impl FnOnce(S) -> ExitCode,
) -> ExitCode
where
    S: Subcommand,
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    crate::logging::init();
    let matches = S::augment_subcommands(Cli::command().name(name).about(about)).get_matches();
    if matches.subcommand_name().is_some() {
        match S::from_arg_matches(&matches) {
            Ok(subcommand) => return command(subcommand),
            Err(error) => error.exit(),
        }
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let config = match load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: invalid config: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("{}", summary(&config));
        return ExitCode::SUCCESS;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = worker_threads {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(workers.min(cores).max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Every task has finished by now; a stray blocking call must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints anyhow's whole chain of causes on one line.
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
