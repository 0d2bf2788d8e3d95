//! The test kit (`crates/testkit`) on the binary this package builds (or `OUTPOST_TEST_BIN`).

pub use testkit::*;

/// The `outpost` binary of this package.
#[derive(Debug, Clone, Copy)]
pub struct Outpost;
impl Binary for Outpost {
    const PATH: &'static str = env!("CARGO_BIN_EXE_outpost");
}

// Each test file uses a part of these.
#[allow(dead_code)]
pub type Network = testkit::Network<Outpost>;
#[allow(dead_code)]
pub type Central = testkit::Central<Outpost>;
#[allow(dead_code)]
pub type Site = testkit::Site<Outpost>;
#[allow(dead_code)]
pub type Server = testkit::Server<Outpost>;
#[allow(dead_code)]
pub fn outpost() -> std::process::Command {
    testkit::outpost::<Outpost>()
}
