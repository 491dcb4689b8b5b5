//! `sortd run --check` (configuration and plan validated, nothing bound) and the hidden
//! `sortd generate` the package build uses for man pages and shell completions.

use std::process::Command;

fn sortd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sortd"))
        .args(args)
        .output()
        .expect("sortd runs")
}

#[test]
fn check_accepts_the_shipped_configuration_and_rejects_a_bad_plan_with_64() {
    let shipped = crate::common::project_path("config/sortd.toml");
    let output = sortd(&["run", "--config", shipped.to_str().unwrap(), "--check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{output:?}");
    assert!(stdout.contains("is valid"), "{stdout}");

    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("plan.csv"),
        "kind,key,chutes\nprefix,33,x\n",
    )
    .unwrap();
    let config = folder.path().join("sortd.toml");
    // The listener's port is taken: --check must not try to bind it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        &config,
        format!(
            "[plan]\npath = \"plan.csv\"\n[[scanners.listeners]]\naddress = \"{}\"\nprotocol = \"binary\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let output = sortd(&["run", "--config", config.to_str().unwrap(), "--check"]);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("plan.csv"),
        "{output:?}"
    );
}

#[test]
fn generate_writes_man_pages_and_completions_from_the_clap_definitions() {
    let folder = tempfile::tempdir().unwrap();
    let man = folder.path().join("man");
    let output = sortd(&["generate", "man", man.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    let page = std::fs::read_to_string(man.join("sortd-run.1")).expect("sortd-run.1");
    assert!(page.contains(".TH sortd-run 1"), "{page}");
    assert!(page.contains("\\-\\-check"), "{page}");
    assert!(man.join("sortd.1").exists());
    assert!(!man.join("sortd-generate.1").exists(), "hidden, no page");

    for (shell, file, needle) in [
        ("bash", "sortd.bash", "complete -F"),
        ("zsh", "_sortd", "#compdef sortd"),
        ("fish", "sortd.fish", "complete -c sortd"),
    ] {
        let dir = folder.path().join(shell);
        let output = sortd(&["generate", "completions", shell, dir.to_str().unwrap()]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = std::fs::read_to_string(dir.join(file)).expect(file);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("plan"), "{shell} completes subcommands");
    }
}
