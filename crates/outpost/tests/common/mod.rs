//! The test kit (`crates/testkit`) with the binary this package builds: these `Network`,
//! `Central`, `Site`, `Server` and `outpost()` run `CARGO_BIN_EXE_outpost` (or
//! `OUTPOST_TEST_BIN`, see `testkit::process`). Each test file uses a part of them.

pub use testkit::*;

/// The `outpost` binary of this package.
#[derive(Debug, Clone, Copy)]
pub struct Outpost;

impl Binary for Outpost {
    const PATH: &'static str = env!("CARGO_BIN_EXE_outpost");
}

#[allow(dead_code, reason = "not every test file runs a whole network")]
pub type Network = testkit::Network<Outpost>;
#[allow(dead_code, reason = "not every test file names a central server")]
pub type Central = testkit::Central<Outpost>;
#[allow(dead_code, reason = "not every test file names a site")]
pub type Site = testkit::Site<Outpost>;
#[allow(dead_code, reason = "not every test file runs another server")]
pub type Server = testkit::Server<Outpost>;

/// A base `outpost` command with a clean environment.
#[allow(dead_code, reason = "not every test file runs a command of its own")]
pub fn outpost() -> std::process::Command {
    testkit::outpost::<Outpost>()
}
