//! `outpost`: the one binary. A thin command line over the library crates: it parses the
//! arguments, sets up logging, and hands each command to its module.

mod central_cmd;
mod cli;
mod demo;
mod input;
mod output;
mod progress;
mod rules;
mod site_cmd;

use clap::Parser;
use cli::{CentralCommand, Cli, Command, SiteCommand};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Central(CentralCommand::Serve { .. }) | Command::Site(SiteCommand::Serve { .. }) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(progress::LogWriter)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Demo { dir, transactions } => demo::run(&dir, transactions),
        Command::Rules { table } => {
            print!("{}", rules::render(table.as_deref())?);
            Ok(())
        }
        Command::Central(command) => central_cmd::run(command),
        Command::Site(command) => site_cmd::run(command),
    }
}
