//! End-to-end tests of the workspace: a real server on 127.0.0.1:0 with its sled registry in a
//! temp dir, real device stores, the real HTTP transport. One binary, a module per topic.

mod util;

mod auth;
mod bad_input;
mod classification;
mod conflict;
mod crash;
mod fuzz_seeds;
mod regression;
mod simulation;
mod sync;
