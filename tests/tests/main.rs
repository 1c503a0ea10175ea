//! End-to-end tests of the workspace: a real server on 127.0.0.1:0 with its sled registry in a
//! temp dir, real device stores, the real HTTP transport. One binary, a module per topic.

mod util;

mod bad_input;
mod conflict;
mod crash;
mod sync;
