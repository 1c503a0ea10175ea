//! The benchmark runs end to end on a tiny workload: every phase but the peer, one run, and
//! prints a table and a JSON line per figure with the merge counts it expects. The figures
//! themselves are not checked here: they mean something only in a release build on a quiet
//! machine (`cargo run --release -p bench`).

use std::process::Command;

#[test]
fn a_tiny_run_prints_the_table_and_the_json_lines() {
    let output = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--smoke")
        .output()
        .expect("the bench binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stderr}\n{stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let figure = |key: &str| {
        lines
            .iter()
            .find(|line| line["figure"] == key)
            .unwrap_or_else(|| panic!("no figure {key} in:\n{stdout}"))
    };
    for key in [
        "first_push_one_device",
        "first_push_fleet",
        "first_pull_commune",
        "nothing_new_500",
        "wire_push",
        "wire_pull",
        "save_p99",
        "server_peak_rss_500",
    ] {
        assert!(
            figure(key)["ours"].as_f64().is_some_and(|v| v > 0.0),
            "{key}"
        );
    }
    assert_eq!(figure("conflicts_reported")["met"], true);
    assert_eq!(figure("merged_reported")["met"], true);
    assert_eq!(figure("nothing_new_round_trips_500")["ours"], 1.0);
    assert!(stdout.contains("figure"), "{stdout}");
}
